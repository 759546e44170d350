"""redline scan postgresql://: a real PostgreSQL (Debian's postgresql) with a log_stream table; planted values
found by table and column with TABLESAMPLE and in full; read-only transactions; clear errors."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from redline.engine import Fingerprinter
from redline.engine.finding import FINGERPRINT_ENV
from redline.scan.db import parse_url
from redline.scan.db_postgres import PostgresBackend
from redline.synth import fake_secret, log_stream_rows
from tests.servers import Server, postgres_connect, run_redline_scan

KEY = "postgres-test-key"
DB = "leakdb"
ROWS = 3000


@pytest.fixture(scope="module")
def loaded(postgres_server: Server) -> tuple[Server, dict[str, str]]:
    admin = postgres_connect(postgres_server, autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DB}")
    admin.execute(f"CREATE DATABASE {DB}")
    admin.close()
    con = postgres_connect(postgres_server, DB, autocommit=True)
    con.execute('CREATE TABLE log_stream (id bigserial PRIMARY KEY, "timestamp" timestamp, span_name text, '
                '"string.names" text[], "string.values" text[], attributes jsonb, _service varchar(64), '
                '_source text, duration_ms float8)')
    rows = log_stream_rows(ROWS, seed=4)
    with con.cursor() as cur:
        cur.executemany(
            'INSERT INTO log_stream ("timestamp", span_name, "string.names", "string.values", attributes, '
            "_service, _source, duration_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, 1.0)",
            [(r["timestamp"], r["span_name"], r["string.names"], r["string.values"],
              json.dumps(dict(zip(r["string.names"], r["string.values"], strict=True))), r["_service"],
              r["_source"]) for r in rows])
    rng = random.Random(5)
    planted = {"openai": fake_secret("openai-project-key", rng), "stripe": fake_secret("stripe-secret-key", rng)}
    con.execute('INSERT INTO log_stream (id, span_name, "string.values", _source) VALUES (100001, %s, %s, %s)',
                ("upstream.call", ["x", planted["openai"]], "vector"))
    con.execute("CREATE SCHEMA billing")
    con.execute("CREATE TABLE billing.customers (email text, card_note varchar(200), api_key char(120))")
    con.execute("INSERT INTO billing.customers VALUES ('a@example.org', %s, NULL)", (f"key: {planted['stripe']}",))
    con.execute("ANALYZE")
    con.close()
    return postgres_server, planted


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FINGERPRINT_ENV, KEY)


def _tables(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["table"]: t for t in summary["tables"]}


def test_full_scan_finds_planted_values(loaded: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    server, planted = loaded
    fp = Fingerprinter(KEY)
    code, recs, summary = run_redline_scan([server.url(DB), "--full", "--batch-size", "500"], tmp_path)
    assert code == 1
    by_fp = {r["fingerprint"]: r for r in recs}
    r = by_fp[fp(planted["openai"])]
    assert (r["table"], r["column"], r["row"], r["type"]) == (f"{DB}.log_stream", "string.values", "100001",
                                                              "openai-project-key")
    r = by_fp[fp(planted["stripe"])]
    assert (r["table"], r["column"]) == (f"{DB}.billing.customers", "card_note")
    assert r["row"].startswith("(")  # no primary key: located by ctid
    tables = _tables(summary)
    assert tables[f"{DB}.log_stream"]["rows"] == ROWS + 1 and tables[f"{DB}.log_stream"]["method"] == "full"
    cols = {c["column"]: c for c in tables[f"{DB}.log_stream"]["columns"]}
    assert set(cols) == {"span_name", "string.names", "string.values", "attributes", "_service", "_source"}
    assert cols["string.values"]["chat"] and cols["attributes"]["chat"] and not cols["_service"]["chat"]
    hints = {(r["column"], r["kind"]) for r in recs if r["type"] == "column-name-hint"}
    assert hints == {("email", "pii"), ("api_key", "secret")}
    assert summary["read_only"].startswith("yes (read-only transactions")


def test_sampled_scan(loaded: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    server, _ = loaded
    code, recs, summary = run_redline_scan([server.url(DB), "--sample", "400"], tmp_path)
    assert code == 1
    t = _tables(summary)[f"{DB}.log_stream"]
    assert t["method"].startswith("TABLESAMPLE BERNOULLI") and 0 < t["rows"] <= 400
    kinds = {r["kind"] for r in recs if r["table"] == f"{DB}.log_stream" and r["column"] == "string.values"}
    assert kinds == {"chat", "secret", "pii"}  # transcripts, keys and the users' e-mail addresses
    assert _tables(summary)[f"{DB}.billing.customers"]["method"] == "all 1 rows"


def test_all_databases(loaded: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    server, _ = loaded
    _, _, summary = run_redline_scan([server.url(""), "--tables", "customers", "--sample", "5"], tmp_path)
    assert [t["table"] for t in summary["tables"]] == [f"{DB}.billing.customers"]


def test_connection_is_read_only(loaded: tuple[Server, dict[str, str]]) -> None:
    import psycopg

    server, _ = loaded
    backend = PostgresBackend(parse_url(server.url(DB)))
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            backend.conn.execute("DELETE FROM billing.customers")
        backend.conn.rollback()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            backend.conn.execute("CREATE TABLE nope (a int)")
    finally:
        backend.close()
    con = postgres_connect(server, DB)
    assert con.execute("SELECT count(*) FROM billing.customers").fetchone()[0] == 1
    con.close()


def test_wrong_password_and_unknown_host(loaded: tuple[Server, dict[str, str]], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    server, _ = loaded
    code, recs, _ = run_redline_scan([f"postgresql://{server.user}:Wr0ngPassw0rd@{server.host}:{server.port}/{DB}"],
                                     tmp_path)
    out = capsys.readouterr()
    assert code == 2 and not recs
    assert "password authentication failed" in out.err and "Wr0ngPassw0rd" not in out.err + out.out
    code, _, _ = run_redline_scan(["postgres://u:pw123456@no-such-host.invalid/db"], tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and "cannot connect to PostgreSQL" in err and "pw123456" not in err


def test_console_script_exit_code(loaded: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    server, _ = loaded
    exe = Path(sys.executable).with_name("redline")
    env = {**os.environ, "PGPW": server.password or ""}
    res = subprocess.run([str(exe), "scan", server.url(DB, with_password=False), "--password-env", "PGPW",
                          "--tables", "customers", "--no-progress"], capture_output=True, text=True, env=env)
    assert res.returncode == 1, res.stderr
    assert "billing.customers" in res.stdout and "read-only" in res.stdout
    assert (server.password or "") not in res.stdout + res.stderr
    res = subprocess.run([str(exe), "scan", server.url(DB, with_password=False), "--password-env", "NOT_SET_X"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "NOT_SET_X" in res.stderr
