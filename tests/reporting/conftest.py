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
        {"host": "10.0.0.5", "port": 6379, "service": "redis", "verdict": "open", "kind": "probe",
         "fingerprint": "d4" * 12, "snippet": "PING answered without AUTH"},
    ]
