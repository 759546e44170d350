"""redline scan sqlite:///file.db: planted values found by table, column and row; sampled and full; read-only."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from redline.engine import Fingerprinter
from redline.engine.finding import FINGERPRINT_ENV
from redline.scan.db import DbUrl, name_hint, parse_url
from redline.scan.db_sqlite import SqliteBackend
from redline.synth import fake_secret, log_stream_rows
from tests.servers import run_redline_scan

KEY = "sqlite-test-key"


@pytest.fixture()
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    monkeypatch.setenv(FINGERPRINT_ENV, KEY)
    rng = random.Random(7)
    values = {"openai": fake_secret("openai-project-key", rng), "github": fake_secret("github-pat", rng)}
    db = tmp_path / "leak.db"
    con = sqlite3.connect(db)
    con.execute('CREATE TABLE log_stream (timestamp TEXT, span_name TEXT, "string.names" TEXT, '
                '"string.values" TEXT, _service TEXT, _source TEXT, bytes INTEGER)')
    rows = log_stream_rows(1500, seed=11)
    con.executemany("INSERT INTO log_stream VALUES (?,?,?,?,?,?,?)", [
        (r["timestamp"], r["span_name"], json.dumps(r["string.names"]), json.dumps(r["string.values"]),
         r["_service"], r["_source"], 1) for r in rows])
    # Row 1501: a planted key in string.values; row 1502: one in _source.
    con.execute("INSERT INTO log_stream VALUES ('2030-01-01 00:00:00', 'upstream.call', '[\"upstream.api_key\"]', ?, "
                "'inference', 'vector', 0)", (json.dumps([values["openai"]]),))
    con.execute("INSERT INTO log_stream VALUES ('2030-01-01 00:00:01', 'x', '[]', '[]', 'ci', ?, 0)",
                (f"token={values['github']}",))
    con.execute("CREATE TABLE users (email TEXT PRIMARY KEY, password TEXT, age INTEGER) WITHOUT ROWID")
    con.execute("INSERT INTO users VALUES ('a@example.org', 'hunter2', 3)")
    con.commit()
    con.close()
    return db, values


def test_full_scan_finds_planted_values_by_table_column_row(planted: tuple[Path, dict[str, str]],
                                                            tmp_path: Path) -> None:
    db, values = planted
    fp = Fingerprinter(KEY)
    code, recs, summary = run_redline_scan([f"sqlite:///{db}", "--full"], tmp_path)
    assert code == 1
    by_fp = {r["fingerprint"]: r for r in recs}
    r = by_fp[fp(values["openai"])]
    assert (r["table"], r["column"], r["row"], r["type"]) == ("leak.log_stream", "string.values", 1501,
                                                              "openai-project-key")
    r = by_fp[fp(values["github"])]
    assert (r["table"], r["column"], r["row"]) == ("leak.log_stream", "_source", 1502)
    assert r["start"] == len("token=") and r["end"] == len("token=") + len(values["github"])
    assert summary["read_only"].startswith("yes")
    tables = {t["table"]: t for t in summary["tables"]}
    assert tables["leak.log_stream"]["rows"] == 1502 and tables["leak.log_stream"]["method"] == "full"
    cols = {c["column"]: c for c in tables["leak.log_stream"]["columns"]}
    assert "bytes" not in cols  # integers are not text
    assert cols["string.values"]["chat"] is True and cols["_service"]["chat"] is False
    assert cols["string.values"]["by_type"]["chat-messages-array"] > 0
    hints = {(r["table"], r["column"], r["kind"]) for r in recs if r["type"] == "column-name-hint"}
    assert hints == {("leak.users", "email", "pii"), ("leak.users", "password", "secret")}
    assert all(r["confidence"] == "low" for r in recs if r["type"] == "column-name-hint")


def test_sampled_scan(planted: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    db, _ = planted
    code, recs, summary = run_redline_scan([f"sqlite:///{db}", "--sample", "200"], tmp_path)
    assert code == 1
    t = {t["table"]: t for t in summary["tables"]}["leak.log_stream"]
    assert t["rows"] == 200 and "random" in t["method"]
    rows = {r["row"] for r in recs if r["table"] == "leak.log_stream"}
    assert rows and all(isinstance(x, int) and 1 <= x <= 1502 for x in rows)
    assert any(r["kind"] == "chat" and r["column"] == "string.values" for r in recs)


def test_table_globs(planted: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    db, _ = planted
    _, _, summary = run_redline_scan([f"sqlite:///{db}", "--tables", "users"], tmp_path)
    assert [t["table"] for t in summary["tables"]] == ["leak.users"]
    _, _recs, summary = run_redline_scan([f"sqlite:///{db}", "--exclude-tables", "leak.user*"], tmp_path)
    assert [t["table"] for t in summary["tables"]] == ["leak.log_stream"]


def test_read_only(planted: tuple[Path, dict[str, str]]) -> None:
    db, _ = planted
    backend = SqliteBackend(parse_url(f"sqlite:///{db}"))
    with pytest.raises(sqlite3.OperationalError):
        backend.conn.execute("DELETE FROM users")
    backend.close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM users").fetchone()[0] == 1


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, recs, _ = run_redline_scan([f"sqlite:///{tmp_path}/nope.db"], tmp_path)
    assert code == 2 and not recs
    assert "no such database file" in capsys.readouterr().err


def test_urls_and_hints() -> None:
    u = parse_url("postgresql://me:p%40ss@db.internal:6543/app?sslmode=require")
    assert (u.host, u.port, u.user, u.password, u.database, u.params) == (
        "db.internal", 6543, "me", "p@ss", "app", {"sslmode": "require"})
    assert "p%40ss" not in u.display and "***" in u.display
    assert isinstance(parse_url("sqlite:///x.db"), DbUrl)
    assert name_hint("api_key") == ("secret", "apikey")
    assert name_hint("userPassword")[0] == "secret"  # type: ignore[index]
    assert name_hint("customer_email") == ("pii", "email")
    assert name_hint("prompt") is None and name_hint("classname") is None and name_hint("tokenizer") is None
