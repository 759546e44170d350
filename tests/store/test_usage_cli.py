from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from redline.cli import main
from redline.gateway.usage import parse_when, usage_report, write_csv, write_json
from redline.store import open_audit_store, open_key_store

from .conftest import event

NOW = datetime.now(UTC).replace(microsecond=0)


def test_parse_when() -> None:
    now = datetime(2025, 5, 20, 15, 30, tzinfo=UTC)
    assert parse_when("7d", now=now) == now - timedelta(days=7)
    assert parse_when("24h", now=now) == now - timedelta(hours=24)
    assert parse_when("30m", now=now) == now - timedelta(minutes=30)
    assert parse_when("2w", now=now) == now - timedelta(weeks=2)
    assert parse_when("today", now=now) == datetime(2025, 5, 20, tzinfo=UTC)
    assert parse_when("month", now=now) == datetime(2025, 5, 1, tzinfo=UTC)
    assert parse_when("2025-01-01") == datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_when("2025-01-01T10:00:00Z") == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert parse_when("2025-01-01T12:00:00+02:00") == datetime(2025, 1, 1, 10, tzinfo=UTC)
    for bad in ("yesterday-ish", "7x", "2025-13-01", ""):
        with pytest.raises(ValueError, match="not a time"):
            parse_when(bad)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    s = open_audit_store(str(path))
    s.write([
        event(0, ts=NOW - timedelta(days=10), team="old", cost_usd=100.0),
        event(1, ts=NOW - timedelta(hours=5), team="research", model="gpt-4o", provider="openai", key_id="rk_1",
              prompt_tokens=1000, completion_tokens=500, cost_usd=0.0075),
        event(2, ts=NOW - timedelta(hours=4), team="research", model="gpt-4o", provider="openai", key_id="rk_1",
              action="redact", prompt_tokens=3000, completion_tokens=500, cost_usd=0.0125,
              redacted_prompt="hello [REDACTED:email]"),
        event(3, ts=NOW - timedelta(hours=3), team="ops", model="deepseek-chat", provider="deepseek",
              key_id="rk_2", action="block", status=403),
        event(4, ts=NOW - timedelta(hours=2), team="ops", model="deepseek-chat", provider="deepseek",
              key_id="rk_2", prompt_tokens=100, completion_tokens=100, cost_usd=0.0001),
    ])
    s.close()
    return path


def test_report_totals_and_formats(store_path: Path) -> None:
    s = open_audit_store(str(store_path))
    rep = usage_report(s, "team", NOW - timedelta(days=7))
    s.close()
    assert [r.group for r in rep.rows] == ["research", "ops"]
    t = rep.total
    assert (t.requests, t.blocked, t.redacted, t.prompt_tokens, t.completion_tokens) == (4, 1, 1, 4100, 1100)
    assert t.cost_usd == pytest.approx(0.0201)
    assert rep.rows[0].cost_per_1k_requests == pytest.approx(10.0)
    assert rep.rows[0].tokens_per_request == pytest.approx(2500.0)
    buf = io.StringIO()
    write_json(rep, buf)
    doc = json.loads(buf.getvalue())
    assert doc["total"]["requests"] == 4 and doc["rows"][0]["group"] == "research"
    buf = io.StringIO()
    write_csv(rep, buf)
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert rows[0]["team"] == "research" and rows[0]["requests"] == "2"


def test_usage_command(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["usage", "--store", str(store_path), "--by", "model", "--since", "7d", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["group"] for r in doc["rows"]} == {"gpt-4o", "deepseek-chat"}
    assert main(["usage", "--store", f"sqlite:///{store_path}", "--by", "team", "--since", "30d"]) == 0
    out = capsys.readouterr().out
    assert "research" in out and "old" in out and "USD / 1k req" in out and "TOTAL" in out
    assert main(["usage", "--store", str(store_path), "--by", "provider", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("provider,requests,")


def test_usage_empty_period(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["usage", "--store", str(store_path), "--since", "1m"]) == 0
    assert "no requests" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["usage", "--since", "lastweek"],
    ["usage", "--since", "1d", "--until", "2d"],
    ["usage", "--by", "colour"],
    ["audit", "export", "--since", "nope"],
    ["audit", "purge", "--before", "2999-01-01", "--yes"],
    ["audit", "export", "--limit", "0"],
])
def test_bad_input_exits_2(store_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--store", str(store_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def test_missing_store_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["usage", "--store", str(tmp_path / "nope.db")])
    assert exc.value.code == 2
    assert "no audit store at" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()  # a typo does not create an empty store


def test_export_jsonl_and_csv(store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "export", "--store", str(store_path), "--since", "7d"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    first = json.loads(lines[0])
    assert first["request_id"] == "req-1" and first["ts"].endswith("+00:00")
    out = tmp_path / "ev.csv"
    assert main(["audit", "export", "--store", str(store_path), "--format", "csv", "-o", str(out),
                 "--team", "research", "--no-prompts"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["request_id"] for r in rows] == ["req-1", "req-2"]
    assert rows[1]["redacted_prompt"] == "" and json.loads(rows[1]["finding_counts"]) == {}
    assert "2 event(s) exported" in capsys.readouterr().err


def test_export_then_import_round_trips(store_path: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    assert main(["audit", "export", "--store", str(store_path), "-o", str(dump)]) == 0
    other = tmp_path / "other.db"
    assert main(["audit", "import", str(dump), "--store", str(other)]) == 0
    a = open_audit_store(str(store_path))
    b = open_audit_store(str(other))
    since = NOW - timedelta(days=100)
    assert list(a.events(since)) == list(b.events(since))
    a.close()
    b.close()


def test_purge(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "purge", "--store", str(store_path), "--before", "7d", "--dry-run"]) == 0
    assert "would delete 1 audit event(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # stdin is not a terminal under pytest: --yes is required
        main(["audit", "purge", "--store", str(store_path), "--before", "7d"])
    assert exc.value.code == 2 and "without --yes" in capsys.readouterr().err
    assert main(["audit", "purge", "--store", str(store_path), "--before", "7d", "--yes", "--vacuum"]) == 0
    assert "deleted 1 audit event(s)" in capsys.readouterr().out
    s = open_audit_store(str(store_path))
    assert s.spend(NOW - timedelta(days=365), team="old") == 0.0
    s.close()


def test_keys_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kp = str(tmp_path / "keys.db")
    assert main(["keys", "create", "--keys", kp, "--team", "research", "--user", "alice", "--budget", "50",
                 "--rpm", "60", "--models", "gpt-4o*,deepseek-chat", "--format", "json"]) == 0
    created = json.loads(capsys.readouterr().out)
    secret, key_id = created["secret"], created["key_id"]
    assert created["budget_usd"] == 50 and created["models"] == ["gpt-4o*", "deepseek-chat"]
    assert main(["keys", "create", "--keys", kp, "--team", "ops", "--admin"]) == 0
    text = capsys.readouterr()
    assert "key id:  rk_" in text.out and "secret:  rl-" in text.out and "shown only now" in text.err
    assert main(["keys", "create", "--keys", kp, "--team", "ops", "-q"]) == 0
    quiet = capsys.readouterr().out.strip()
    assert quiet.startswith("rl-") and len(quiet) == 43

    ks = open_key_store(kp)
    rec = ks.authenticate(secret)
    assert rec is not None and rec.key_id == key_id and rec.team == "research" and rec.rpm == 60
    ks.close()

    assert main(["keys", "list", "--keys", kp, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 3 and all("secret" not in k for k in listed)
    assert main(["keys", "list", "--keys", kp]) == 0
    out = capsys.readouterr().out
    assert key_id in out and secret not in out

    assert main(["keys", "revoke", "--keys", kp, key_id]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "--keys", kp, key_id]) == 0
    assert "already revoked" in capsys.readouterr().out
    ks = open_key_store(kp)
    assert ks.authenticate(secret) is None
    ks.close()
    assert main(["keys", "list", "--keys", kp, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["keys", "list", "--keys", kp, "--format", "json", "--all"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["keys", "show", "--keys", kp, key_id]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "revoked"


@pytest.mark.parametrize("argv", [
    ["keys", "create", "--team", "a;drop"],
    ["keys", "create", "--team", "t", "--rpm", "0"],
    ["keys", "create", "--team", "t", "--budget", "-5"],
    ["keys", "create", "--team", "t", "--budget", "nan"],
    ["keys", "create", "--team", "t", "--models", ","],
    ["keys", "revoke", "rk_missing"],
    ["keys", "show", "rk_missing"],
])
def test_keys_bad_input(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    kp = str(tmp_path / "keys.db")
    open_key_store(kp).close()
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--keys", kp])
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_keys_list_without_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["keys", "list", "--keys", str(tmp_path / "none.db")])
    assert exc.value.code == 2 and "no key store" in capsys.readouterr().err


def test_console_script_with_env(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("redline")
    env = {**os.environ, "REDLINE_KEYS": str(tmp_path / "k.db"), "REDLINE_STORE": str(tmp_path / "a.db")}
    r = subprocess.run([str(exe), "keys", "create", "--team", "research", "-q"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("rl-")
    r = subprocess.run([str(exe), "usage", "--since", "7d"], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 2 and "no audit store" in r.stderr and "Traceback" not in r.stderr
