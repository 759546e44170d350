"""The real `redline gateway` process: audit events accepted before SIGTERM are in the store after it exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import openai
import pytest

from redline.store.sqlite import SqliteAuditStore, SqliteKeyStore
from tests.gateway.conftest import free_port
from tests.gateway.upstream import Upstream


@pytest.fixture()
def upstream() -> Iterator[Upstream]:
    up = Upstream().start()
    yield up
    up.stop()


def test_sigterm_flushes_every_audit_event(upstream: Upstream, tmp_path: Path) -> None:
    audit, keys = tmp_path / "audit.db", tmp_path / "keys.db"
    config = {
        "providers": [{"name": "cloud", "base_url": upstream.base_url, "api_key_env": "REDLINE_TEST_UPSTREAM_KEY"}],
        "models": [{"name": "ds-chat", "provider": "cloud", "upstream": "echo-3"}],
        # A long flush interval: the events are still queued when SIGTERM arrives.
        "audit": {"flush_seconds": 30, "batch_size": 10_000},
        "store": {"audit": str(audit), "keys": str(keys)},
    }
    cfg = tmp_path / "redline.yaml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    record, secret = SqliteKeyStore(str(keys)).create("research")
    port = free_port()
    env = {**os.environ, "REDLINE_TEST_UPSTREAM_KEY": "upstream-test-key"}
    proc = subprocess.Popen([sys.executable, "-m", "redline", "gateway", "--config", str(cfg), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=secret, max_retries=0, timeout=10)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    output = proc.stdout.read() if proc.stdout else ""
                    raise AssertionError(f"gateway did not start: {output}") from None
                time.sleep(0.1)
        for i in range(25):
            client.chat.completions.create(model="ds-chat", messages=[{"role": "user", "content": f"hello {i}"}])
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    store = SqliteAuditStore(str(audit))
    events = [e for e in store.events(since=datetime(2000, 1, 1)) if e.endpoint == "chat.completions"]
    store.close()
    assert len(events) == 25
    assert all(e.key_id == record.key_id and e.team == "research" for e in events)
