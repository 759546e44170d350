"""Audit events carry finding types, counts and fingerprints, never the values: check the bytes on disk."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from redline.cli import main
from redline.engine import Finding, Scanner
from redline.store import open_audit_store
from redline.store.base import AuditEvent
from redline.synth import PII_TYPES, SECRET_TYPES, fake_pii, fake_secret

NOW = datetime.now(UTC)


def _redact(text: str, findings: list[Finding]) -> str:
    out, last = [], 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start < last:
            continue
        out.append(text[last:f.start])
        out.append(f"[REDACTED:{f.type}]")
        last = f.end
    out.append(text[last:])
    return "".join(out)


def _events(tmp_path: Path) -> tuple[Path, list[str]]:
    rng = random.Random(4)
    scanner = Scanner(fingerprint_key=b"test-key")
    planted: list[str] = []
    events: list[AuditEvent] = []
    for i in range(40):
        secret = fake_secret(SECRET_TYPES[i % len(SECRET_TYPES)], rng)
        pii = fake_pii(PII_TYPES[i % len(PII_TYPES)], rng)
        prompt = f"please debug this: key = {secret}\ncustomer contact: {pii}\nthanks"
        findings = scanner.scan_text(prompt)
        found_values = {prompt[f.start:f.end] for f in findings}
        if secret in found_values:
            planted.append(secret)
        if pii in found_values:
            planted.append(pii)
        events.append(AuditEvent(
            ts=NOW - timedelta(minutes=i), request_id=f"r{i}", key_id="rk_x", team="research", user="alice",
            provider="openai", model="gpt-4o", endpoint="chat.completions", action="redact", status=200,
            finding_counts=dict(Counter(f.type for f in findings)),
            finding_kinds=dict(Counter(f.kind for f in findings)),
            fingerprints=[f.fingerprint for f in findings], prompt_tokens=50, completion_tokens=20,
            cost_usd=0.0003, redacted_prompt=_redact(prompt, findings)))
    assert len(planted) >= 25, "the scanner should find the planted secrets"
    path = tmp_path / "audit.db"
    store = open_audit_store(str(path))
    store.write(events)
    store.close()
    return path, planted


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


def test_no_planted_value_in_the_database_files(tmp_path: Path) -> None:
    _, planted = _events(tmp_path)
    raw = _all_bytes(tmp_path)
    for value in planted:
        assert value.encode() not in raw, value[:6]
    assert b"[REDACTED:" in raw  # the redacted prompts are there, just without the values


def test_redline_scan_finds_nothing_in_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, planted = _events(tmp_path)
    # The SQLite file is binary (redline scan skips binary files): scan its printable text, and the export.
    text = re.sub(rb"[^\x20-\x7e\n]+", b"\n", _all_bytes(tmp_path)).decode("ascii")
    dump = tmp_path / "strings.txt"
    dump.write_text(text)
    export = tmp_path / "export.jsonl"
    assert main(["audit", "export", "--store", str(path), "-o", str(export)]) == 0
    assert len(export.read_text().splitlines()) == 40
    capsys.readouterr()
    code = main(["scan", str(dump), str(export), "--format", "jsonl", "--reveal", "--no-progress"])
    out = capsys.readouterr().out
    records = [json.loads(x) for x in out.splitlines() if x.strip()]
    leaked = [r for r in records if any(v in json.dumps(r) for v in planted)]
    assert leaked == []
    assert code == 0, records[:5]
