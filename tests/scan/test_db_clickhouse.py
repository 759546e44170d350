"""redline scan clickhouse://: a real ClickHouse (Debian's clickhouse-server) with a log_stream table shaped like
DeepSeek's, planted values found by table and column in sampled and full modes; read-only; clear errors."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from redline.engine import Fingerprinter
from redline.engine.finding import FINGERPRINT_ENV
from redline.scan.db import DbError, parse_url
from redline.scan.db_clickhouse import ClickHouseBackend, text_like
from redline.synth import fake_secret, log_stream_rows
from tests.servers import (
    LOG_STREAM_COLUMNS,
    Server,
    clickhouse_client,
    clickhouse_create_log_stream,
    clickhouse_insert,
    log_stream_tuples,
    run_redline_scan,
)

KEY = "clickhouse-test-key"
DB = "leakdb"
ROWS = 4000
PLANT_TS = datetime(2030, 1, 1, 0, 0, 0)


@pytest.fixture(scope="module")
def loaded(clickhouse_server: Server) -> tuple[Server, dict[str, str]]:
    client = clickhouse_client(clickhouse_server)
    client.execute(f"DROP DATABASE IF EXISTS {DB}")
    client.execute(f"CREATE DATABASE {DB}")
    clickhouse_create_log_stream(client, f"{DB}.log_stream")
    clickhouse_create_log_stream(client, f"{DB}.log_sampled", sample_by=True)
    rows = log_stream_rows(ROWS, seed=3)
    clickhouse_insert(client, f"{DB}.log_stream", LOG_STREAM_COLUMNS, log_stream_tuples(rows))
    clickhouse_insert(client, f"{DB}.log_sampled", None, log_stream_tuples(rows, with_row=True))
    rng = random.Random(99)
    planted = {"openai": fake_secret("openai-project-key", rng), "anthropic": fake_secret("anthropic-api-key", rng),
               "github": fake_secret("github-pat", rng)}
    client.execute(f"INSERT INTO {DB}.log_stream VALUES", [
        (PLANT_TS, "upstream.call", ["upstream", "upstream.api_key"], ["http://10.0.0.1", planted["openai"]],
         [], [], "inference", "h1", "vector"),
        (PLANT_TS, "auth.verify", [], [], [], [], "auth-svc", "h1", f"key={planted['anthropic']}"),
    ])
    client.execute("SET allow_experimental_low_cardinality_type = 1")
    client.execute(f"""CREATE TABLE {DB}.odd_types (id UInt64, fs FixedString(8), n Nullable(String),
        lc LowCardinality(String), nested Array(Array(String)), num Float64) ENGINE = Log""")
    client.execute(f"INSERT INTO {DB}.odd_types VALUES",
                   [(1, "abcdefgh", None, "x", [["a"], [f"ghp token {planted['github']}"]], 1.0)])
    client.disconnect()
    return clickhouse_server, planted


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FINGERPRINT_ENV, KEY)


def _tables(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["table"]: t for t in summary["tables"]}


def test_full_scan_finds_planted_values(loaded: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    server, planted = loaded
    fp = Fingerprinter(KEY)
    code, recs, summary = run_redline_scan([server.url(DB), "--full", "--batch-size", "700"], tmp_path)
    assert code == 1
    by_fp = {r["fingerprint"]: r for r in recs}
    r = by_fp[fp(planted["openai"])]
    assert (r["table"], r["column"], r["type"]) == (f"{DB}.log_stream", "string.values", "openai-project-key")
    assert r["row"] == "timestamp=2030-01-01 00:00:00"
    r = by_fp[fp(planted["anthropic"])]
    assert (r["table"], r["column"], r["type"]) == (f"{DB}.log_stream", "_source", "anthropic-api-key")
    assert (r["start"], r["end"]) == (4, 4 + len(planted["anthropic"]))
    r = by_fp[fp(planted["github"])]
    assert (r["table"], r["column"], r["row"]) == (f"{DB}.odd_types", "nested", 0)
    tables = _tables(summary)
    assert tables[f"{DB}.log_stream"]["rows"] == ROWS + 2
    assert tables[f"{DB}.log_sampled"]["rows"] == ROWS
    assert summary["read_only"] == "yes (readonly=1)" and summary["mode"] == "full"
    cols = {c["column"]: c for c in tables[f"{DB}.log_stream"]["columns"]}
    assert set(cols) == {"span_name", "string.names", "string.values", "number.names", "_service", "_host",
                         "_source"}
    assert cols["string.values"]["chat"] is True
    assert {"chat-messages-array", "deepseek-api-key"} <= set(cols["string.values"]["by_type"])
    assert cols["string.values"]["examples"] and all("…" in e["snippet"] or "chat" in e["snippet"]
                                                     for e in cols["string.values"]["examples"])
    assert {c["column"] for c in tables[f"{DB}.odd_types"]["columns"]} == {"fs", "n", "lc", "nested"}
    # Same content in both tables: the same secrets, seen in both.
    full_types = {r["type"] for r in recs if r["table"] == f"{DB}.log_sampled"}
    assert {"chat-messages-array", "deepseek-api-key", "generic-jwt"} <= full_types


def test_sampled_scan(loaded: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    server, _ = loaded
    code, recs, summary = run_redline_scan([server.url(DB), "--sample", "500"], tmp_path)
    assert code == 1
    tables = _tables(summary)
    plain, sampled = tables[f"{DB}.log_stream"], tables[f"{DB}.log_sampled"]
    assert plain["method"].startswith("LIMIT 500 at random offset") and plain["rows"] == 500
    assert sampled["method"].startswith("SAMPLE ") and 0 < sampled["rows"] <= 500
    assert tables[f"{DB}.odd_types"]["method"] == "all 1 rows"
    for t in (f"{DB}.log_stream", f"{DB}.log_sampled"):
        kinds = {r["kind"] for r in recs if r["table"] == t and r["column"] == "string.values"}
        assert kinds == {"chat", "secret", "pii"}  # transcripts, keys and the users' e-mail addresses


def test_all_databases_and_globs(loaded: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    server, _ = loaded
    _, _, summary = run_redline_scan([server.url(""), "--tables", "*.log_s*", "--exclude-tables", "log_sampled",
                                      "--sample", "10"], tmp_path)
    assert [t["table"] for t in summary["tables"]] == [f"{DB}.log_stream"]


def test_connection_is_read_only(loaded: tuple[Server, dict[str, str]]) -> None:
    server, _ = loaded
    backend = ClickHouseBackend(parse_url(server.url(DB)))
    try:
        for sql in (f"INSERT INTO {DB}.odd_types (id) VALUES", f"DROP TABLE {DB}.odd_types",
                    f"CREATE TABLE {DB}.x (a String) ENGINE = Log"):
            with pytest.raises(Exception, match="readonly"):
                backend.client.execute(sql, [(2,)] if sql.startswith("INSERT") else None)
    finally:
        backend.close()
    assert clickhouse_client(server).execute(f"SELECT count() FROM {DB}.odd_types")[0][0] == 1


def test_password_from_environment(loaded: tuple[Server, dict[str, str]], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = loaded
    monkeypatch.setenv("CH_PW", server.password or "")
    url = server.url(DB, with_password=False)
    code, _recs, summary = run_redline_scan([url, "--password-env", "CH_PW", "--tables", "odd_types"], tmp_path)
    assert code == 1 and summary["tables"][0]["rows"] == 1
    monkeypatch.setenv("REDLINE_DB_PASSWORD", server.password or "")
    code, _, summary = run_redline_scan([url, "--tables", "odd_types"], tmp_path)
    assert code == 1 and summary["tables"][0]["rows"] == 1


def test_wrong_password_is_exit_2_without_the_password(loaded: tuple[Server, dict[str, str]], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    server, _ = loaded
    url = f"clickhouse://{server.user}:Sup3rSecretWr0ng@{server.host}:{server.port}/{DB}"
    code, recs, _ = run_redline_scan([url], tmp_path)
    out = capsys.readouterr()
    assert code == 2 and not recs
    assert "Wrong password" in out.err or "password" in out.err.lower()
    assert "Sup3rSecretWr0ng" not in out.err + out.out and "***" in out.err
    assert "Stack trace" not in out.err


def test_unknown_host_and_bad_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_redline_scan(["clickhouse://u:pw123456@no-such-host.invalid:9000/db"], tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and "cannot connect to ClickHouse" in err and "pw123456" not in err
    code, _, _ = run_redline_scan(["clickhouse://u:pw123456@localhost:notaport/db"], tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and "bad URL" in err and "pw123456" not in err


def test_text_like_types() -> None:
    for t in ("String", "FixedString(16)", "Nullable(String)", "LowCardinality(Nullable(String))", "Array(String)",
              "Map(String, UInt64)", "Map(LowCardinality(String), String)", "JSON", "Object('json')",
              "Array(Nullable(String))"):
        assert text_like(t), t
    for t in ("UInt64", "DateTime", "Array(Float64)", "Nullable(Int8)", "Map(UInt8, UInt8)"):
        assert not text_like(t), t


def test_unreachable_port_error(tmp_path: Path) -> None:
    from tests.servers import free_port

    with pytest.raises(DbError, match="cannot connect"):
        ClickHouseBackend(parse_url(f"clickhouse://u@127.0.0.1:{free_port()}/x"), timeout=3)
