from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from redline import synth

RNG = random.Random(20250808)
GH = synth.fake_secret("github-pat", RNG)
SK = synth.fake_secret("openai-project-key", RNG)
EMAIL = synth.fake_pii("email", RNG)
# A folder and file whose joined path is "<script>…</script>.log": the report must show it as text.
EVIL_DIR = "<script>window.__pwned=1;console.error('xss')<"
EVIL_FILE = "script><img src=x onerror=window.__pwned=2>.log"


@pytest.fixture()
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    (d / "app.log").write_text(
        "2025-01-06 10:00:00 INFO starting\n"
        f"2025-01-06 10:00:01 WARN token={GH} user={EMAIL}\n",
        encoding="utf-8",
    )
    body = json.dumps({"model": "deepseek-chat", "messages": [
        {"role": "user", "content": f"my key is {SK}"}, {"role": "assistant", "content": "please rotate it"}]})
    (d / "gateway.jsonl").write_text(json.dumps({"ts": 1, "body": body}) + "\n", encoding="utf-8")
    evil = d / EVIL_DIR
    evil.mkdir()
    (evil / EVIL_FILE).write_text(f"key={GH}\n", encoding="utf-8")
    return d


def db_and_probe_records() -> list[dict[str, Any]]:
    """Records as the database scanner and the (coming) probe front end shape them."""
    return [
        {"table": "main.users", "column": "email", "row": 7, "start": 0, "end": 20, "kind": "pii", "type": "email",
         "confidence": "high", "fingerprint": "a1" * 12, "snippet": "j…@…(20 chars)"},
        {"table": "main.users", "column": "password", "kind": "secret", "type": "column-name-hint",
         "confidence": "low", "fingerprint": "b2" * 12, "snippet": "column name suggests secrets (password)",
         "hint": "password"},
        {"table": "logs.<b>bold</b>", "column": "body", "row": "<i>k</i>", "start": 3, "end": 300, "kind": "chat",
         "type": "chat-messages-array", "confidence": "high", "fingerprint": "c3" * 12,
         "snippet": "[chat transcript, 297 chars]"},
        *PROBE_RESULTS,
    ]


# `redline probe --format jsonl` lines (redline.probe.Result.to_dict()), one with --inspect findings.
PROBE_RESULTS: list[dict[str, Any]] = [
    {"endpoint": "10.0.0.5:6379", "host": "10.0.0.5", "port": 6379, "service": "redis", "verdict": "open",
     "severity": "high", "version": "7.2.4", "tls": False,
     "evidence": ["PING answered +PONG without AUTH", "INFO: redis_version:7.2.4"],
     "fix": "Set requirepass (or ACL users), bind to a private interface and keep protected-mode on.",
     "seconds": 0.012, "bytes_read": 180,
     "inspect": {"service": "redis", "via": "RESP", "findings": 1, "by_kind": {"secret": 1}, "errors": [],
                 "tables": [{"table": "db0", "rows": 10, "sampled": 10, "findings": 1, "by_kind": {"secret": 1},
                             "by_type": {"openai-project-key": 1}, "chat": False,
                             "examples": [{"column": "value", "type": "openai-project-key",
                                           "fingerprint": "e5" * 12, "snippet": "sk-p…(164 chars)"}],
                             "summary": "db0: 10 keys; all keys hold 1 secret(s) (openai-project-key)"}]}},
    {"endpoint": "10.0.0.5:5432", "host": "10.0.0.5", "port": 5432, "service": "postgresql",
     "verdict": "auth-required", "severity": "low", "version": None, "tls": False,
     "evidence": ["password authentication requested (SCRAM-SHA-256)"],
     "fix": "Authentication is on; still keep postgresql off public networks, strong passwords.",
     "seconds": 0.004, "bytes_read": 40},
    {"endpoint": "10.0.0.5:9000", "host": "10.0.0.5", "port": 9000, "service": None, "verdict": "closed",
     "severity": "none", "version": None, "tls": False, "evidence": ["connection refused"], "fix": "",
     "seconds": 0.001, "bytes_read": 0},
]
