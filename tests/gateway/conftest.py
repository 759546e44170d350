"""Fixtures: real upstream stand-ins, a real gateway (uvicorn on a loopback port), the official openai SDK."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from redline.gateway.app import create_app
from redline.gateway.config import parse_config
from redline.store.sqlite import SqliteAuditStore, SqliteKeyStore
from tests.gateway.upstream import Upstream

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """uvicorn serving an ASGI app in a thread, on 127.0.0.1 and a free port."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
                             lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def gateway_config(cloud: Upstream, local: Upstream, **extra: Any) -> dict[str, Any]:
    models = [
        ("ds-chat", "cloud", "echo-3"), ("ds-cut", "cloud", "cut"), ("ds-stall", "cloud", "stall"),
        ("ds-500", "cloud", "fail-500"), ("ds-429", "cloud", "fail-429"), ("ds-401", "cloud", "fail-401"),
        ("ds-reset", "cloud", "reset"), ("ds-leak", "cloud", "leak"), ("ds-slow", "cloud", "slow"),
        ("ds-reroute", "cloud", "echo-3"), ("ds-embed", "cloud", "embed"), ("ds-one", "cloud", "echo-1"),
        ("local-llama", "local", "echo-5"), ("banned-chat", "banned", "echo"),
    ]
    cfg: dict[str, Any] = {
        "providers": [
            {"name": "cloud", "base_url": cloud.base_url, "api_key_env": "REDLINE_TEST_UPSTREAM_KEY",
             "timeout": 1.5},
            {"name": "local", "base_url": local.base_url, "default_model": "echo-5"},
            {"name": "banned", "base_url": cloud.base_url, "enabled": False},
        ],
        "models": [{"name": n, "provider": p, "upstream": u} for n, p, u in models],
        "detection": {"rules": [str(HERE / "pii_rules.toml")]},
        "policy": {
            "default": {"request": {"secret": "block", "pii": "pseudonymize"}, "response": {"secret": "redact"}},
            "providers": {"local": {"request": {"pii": "allow", "secret": "redact"}}},
            "models": {"ds-reroute": {"request": {"pii": {"reroute": "local"}}}},
        },
        "audit": {"store_redacted_prompt": True, "flush_seconds": 0.05},
        "limits": {"max_body_bytes": 64 * 1024},
    }
    cfg.update(extra)
    return cfg


class Env:
    def __init__(self, tmp: Path, **extra: Any) -> None:
        self.cloud = Upstream().start()
        self.local = Upstream().start()
        self.db = tmp / "redline.db"
        self.keys = SqliteKeyStore(self.db)
        self.audit = SqliteAuditStore(self.db)
        _, self.key = self.keys.create("research", user="alice", name="tests")
        _, self.admin_key = self.keys.create("ops", admin=True)
        self.config = parse_config(gateway_config(self.cloud, self.local, **extra))
        self.app = create_app(self.config, key_store=self.keys, audit_store=self.audit)
        self.server = Server(self.app).start()

    def client(self, key: str | None = None, **kw: Any) -> Any:
        from openai import OpenAI

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 10)
        return OpenAI(base_url=self.server.base_url, api_key=key or self.key, **kw)

    def clear(self) -> None:
        self.cloud.requests.clear()
        self.local.requests.clear()

    def close(self) -> None:
        self.server.stop()
        self.cloud.stop()
        self.local.stop()
        self.keys.close()
        self.audit.close()


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    import os

    os.environ["REDLINE_TEST_UPSTREAM_KEY"] = "upstream-provider-key-for-tests"
    e = Env(tmp_path_factory.mktemp("gateway"))
    try:
        yield e
    finally:
        e.close()
