"""The ClickHouse audit store against a real server (Debian's clickhouse-server on loopback, random port, throwaway
data directory, password-protected user): secure defaults, schema, partition-based purge and retention, the
audit CLI, and the gateway writing into it without a raw value ever reaching the table."""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from redline.cli import main
from redline.engine import Fingerprinter
from redline.engine.finding import FINGERPRINT_ENV
from redline.store import StoreError, StoreSecurityError, check_audit_store, open_audit_store
from redline.store.base import AuditEvent
from redline.store.clickhouse import ClickHouseAuditStore, check_url, create_table_sql, parse_url
from redline.synth import fake_secret
from tests.servers import Server, clickhouse_client, run_redline_scan

from .conftest import event


def _cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def _url(server: Server, table: str | None = None) -> str:
    return server.url() + f"?table={table or 'audit_' + uuid.uuid4().hex[:12]}"


def _store(server: Server, **kw: Any) -> ClickHouseAuditStore:
    s = open_audit_store(_url(server), **kw)
    assert isinstance(s, ClickHouseAuditStore)
    return s


# ------------------------------------------------------------------------------------------ secure defaults


def test_default_user_without_password_is_refused(clickhouse_server_factory: Callable[..., Server]) -> None:
    open_server = clickhouse_server_factory(password=None, user="default")
    with pytest.raises(StoreSecurityError, match="'default' user with an empty password"):
        open_audit_store(_url(open_server))
    # ... unless explicitly allowed, and then it works.
    s = open_audit_store(_url(open_server), allow_insecure=True)
    try:
        s.write([event(1)])
        assert s.count() == 1
    finally:
        s.close()


def test_plain_text_to_a_network_host_is_refused() -> None:
    with pytest.raises(StoreSecurityError, match="not encrypted") as exc:
        check_url("clickhouse://redline:s3cret-pw@10.1.2.3:9000/audit")
    assert "s3cret-pw" not in str(exc.value)
    assert "--allow-insecure-store" in str(exc.value)
    check_url("clickhouses://redline:pw@10.1.2.3/audit")  # TLS: fine
    check_url("clickhouse://redline:pw@db.internal:9440/audit?secure=1&ca_certs=/etc/ssl/ca.pem")
    check_url("clickhouse://redline:pw@[::1]:9000/audit")  # loopback: fine
    check_url("clickhouse://redline:pw@localhost/audit")
    check_url("clickhouse://redline:pw@10.1.2.3:9000/audit", allow_insecure=True)
    with pytest.raises(StoreSecurityError, match="certificate checks are off"):
        check_url("clickhouses://redline:pw@db.example.com/audit?verify=0")
    with pytest.raises(StoreSecurityError, match=r"default.*and the connection"):
        check_url("clickhouse://10.1.2.3/audit")  # both reasons, in one message
    with pytest.raises(StoreError, match="unknown ClickHouse store parameter"):
        parse_url("clickhouse://redline:pw@localhost/audit?tabel=x")
    assert parse_url("clickhouses://u:p@h/db?table=t&retention_days=30").port == 9440


def test_cli_refuses_insecure_store_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDLINE_ALLOW_INSECURE_STORE", raising=False)
    code = _cli(["audit", "export", "--store", "clickhouse://redline:pw@192.0.2.10:9000/audit"])
    err = capsys.readouterr().err
    assert code == 2
    assert "refusing to use the ClickHouse audit store" in err and "not encrypted" in err
    assert len(err.strip().splitlines()) == 1 and "pw" not in err.replace("password", "")
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("providers: [{name: p, base_url: 'http://127.0.0.1:9'}]\n"
                   "store: {audit: 'clickhouse://192.0.2.10/audit'}\n")
    assert _cli(["gateway", "--config", str(cfg), "--check"]) == 2
    assert "'default' user" in capsys.readouterr().err
    check_audit_store("clickhouse://192.0.2.10/audit", allow_insecure=True)


# ------------------------------------------------------------------------------------------ schema


def test_schema_is_made_for_clickhouse(clickhouse_server: Server) -> None:
    s = _store(clickhouse_server)
    try:
        ddl = clickhouse_client(clickhouse_server).execute(f"SHOW CREATE TABLE default.{s.url.table}")[0][0]
        assert "ENGINE = MergeTree" in ddl
        assert "PARTITION BY toYYYYMMDD(ts)" in ddl
        assert "ORDER BY (toStartOfHour(ts), team, action, ts_us)" in ddl
        assert s.server_version.startswith(("18.", "19.", "2")) and s.supports_ttl == (s.version >= (19, 6))
    finally:
        s.close()
    assert "TTL ts + INTERVAL 30 DAY" in create_table_sql("d", "t", version=(19, 6, 0), retention_days=30)
    assert "TTL" not in create_table_sql("d", "t", version=(18, 16, 1), retention_days=30)
    assert "TTL" not in create_table_sql("d", "t", version=(24, 3, 0), retention_days=None)


def test_reopening_keeps_data_and_foreign_tables_are_refused(clickhouse_server: Server) -> None:
    url = _url(clickhouse_server)
    s = open_audit_store(url)
    s.write([event(i) for i in range(3)])
    s.close()
    s = open_audit_store(url)
    assert s.count() == 3
    s.close()
    clickhouse_client(clickhouse_server).execute("CREATE TABLE default.not_ours (x UInt8) ENGINE = Memory")
    with pytest.raises(StoreError, match="not a redline audit table"):
        open_audit_store(clickhouse_server.url() + "?table=not_ours")


def _parts(server: Server, table: str) -> list[str]:
    rows = clickhouse_client(server).execute(
        "SELECT DISTINCT partition FROM system.parts WHERE database = 'default' AND table = %(t)s AND active",
        {"t": table})
    return sorted(str(r[0]).strip("'") for r in rows)


def test_purge_drops_whole_days_and_deletes_the_boundary_day_exactly(clickhouse_server: Server) -> None:
    s = _store(clickhouse_server)
    day0 = datetime(2025, 3, 10, tzinfo=UTC)
    try:
        s.write([event(i, ts=day0 + timedelta(hours=6 * i)) for i in range(12)])  # 3 days, 4 events a day
        assert _parts(clickhouse_server, s.url.table) == ["20250310", "20250311", "20250312"]
        assert s.purge(day0 + timedelta(days=1, hours=7)) == 6  # day 1 whole, 2 of day 2
        assert _parts(clickhouse_server, s.url.table) == ["20250311", "20250312"]
        assert [e.request_id for e in s.events(day0)] == [f"req-{i}" for i in range(6, 12)]
        assert s.purge(day0) == 0
    finally:
        s.close()


def test_retention_drops_old_days_on_servers_without_ttl(clickhouse_server: Server) -> None:
    table = "audit_" + uuid.uuid4().hex[:12]
    s = _store_at(clickhouse_server, table)
    now = datetime.now(UTC)
    s.write([event(i, ts=now - timedelta(days=d)) for i, d in enumerate((0, 1, 5, 9))])
    s.close()
    s = _store_at(clickhouse_server, table, "&retention_days=3")
    try:
        if s.supports_ttl:  # pragma: no cover - on 19.6+ the server's TTL does it (on merges)
            pytest.skip("server has TTL")
        assert sorted(e.request_id for e in s.events(now - timedelta(days=30))) == ["req-0", "req-1"]
    finally:
        s.close()


def _store_at(server: Server, table: str, extra: str = "") -> ClickHouseAuditStore:
    s = open_audit_store(server.url() + f"?table={table}{extra}")
    assert isinstance(s, ClickHouseAuditStore)
    return s


def test_big_write_is_one_batched_insert_per_chunk(clickhouse_server: Server) -> None:
    s = _store(clickhouse_server)
    try:
        t0 = time.perf_counter()
        s.write([event(i, ts=datetime(2025, 3, 10, tzinfo=UTC) + timedelta(milliseconds=i)) for i in range(20_000)])
        took = time.perf_counter() - t0
        assert s.count() == 20_000
        assert took < 20, took
    finally:
        s.close()


# ------------------------------------------------------------------------------------------ audit CLI


def test_audit_export_and_purge_cli(clickhouse_server: Server, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    url = _url(clickhouse_server)
    s = open_audit_store(url)
    now = datetime.now(UTC).replace(microsecond=0)
    old = [event(i, ts=now - timedelta(days=40, seconds=i), finding_counts={"email": 1}, fingerprints=["ab12"])
           for i in range(5)]
    new = [event(100 + i, ts=now - timedelta(hours=1, seconds=i), team="ops") for i in range(3)]
    s.write(old + new)
    s.close()

    out = tmp_path / "e.jsonl"
    assert _cli(["audit", "export", "--store", url, "--since", "7d", "--format", "jsonl", "-o", str(out)]) == 0
    got = [AuditEvent.from_dict(json.loads(line)) for line in out.read_text().splitlines()]
    assert sorted(e.request_id for e in got) == sorted(e.request_id for e in new)
    assert _cli(["audit", "export", "--store", url, "--format", "csv", "-o", str(tmp_path / "e.csv")]) == 0
    lines = (tmp_path / "e.csv").read_text().splitlines()
    assert lines[0].startswith("ts,request_id") and len(lines) == 9
    capsys.readouterr()
    assert _cli(["audit", "purge", "--store", url, "--before", "30d", "--dry-run"]) == 0
    assert "would delete 5 audit event(s)" in capsys.readouterr().out
    assert _cli(["audit", "purge", "--store", url, "--before", "30d", "--yes"]) == 0
    assert "deleted 5 audit event(s)" in capsys.readouterr().out
    s = open_audit_store(url)
    assert s.count() == 3
    s.close()


# ------------------------------------------------------------------------------------------ the gateway into ClickHouse

KEY = "clickhouse-audit-test-key"


def test_gateway_audits_into_clickhouse_without_raw_values(clickhouse_server: Server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from redline.gateway.app import create_app
    from redline.gateway.config import parse_config
    from redline.store.sqlite import SqliteKeyStore
    from tests.gateway.conftest import Server as Uvicorn
    from tests.gateway.conftest import gateway_config
    from tests.gateway.upstream import Upstream

    monkeypatch.setenv("REDLINE_TEST_UPSTREAM_KEY", "upstream-provider-key-for-tests")
    rng = random.Random(5)
    secret, token = fake_secret("openai-project-key", rng), fake_secret("github-pat", rng)
    emails = ["wei.zhang@qq.com", "olivia.smith88@proton.me"]
    table = "gw_audit_" + uuid.uuid4().hex[:8]
    cloud, local = Upstream().start(), Upstream().start()
    keys = SqliteKeyStore(tmp_path / "keys.db")
    _, user_key = keys.create("research", user="alice")
    cfg = gateway_config(cloud, local, store={"audit": clickhouse_server.url() + f"?table={table}"})
    app = create_app(parse_config(cfg), key_store=keys)  # the gateway opens the ClickHouse store itself
    srv = Uvicorn(app).start()
    try:
        client = openai.OpenAI(base_url=srv.base_url, api_key=user_key, max_retries=0, timeout=10)
        for e in emails:
            client.chat.completions.create(model="ds-chat", messages=[{"role": "user", "content": f"mail {e} now"}])
            client.chat.completions.create(model="ds-reroute", messages=[{"role": "user", "content": f"hi {e}"}])
        for s in (secret, token):
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(model="ds-chat", messages=[{"role": "user", "content": f"use {s}"}])
        cloud.leak_text = f"the admin token is {token}"
        r = client.chat.completions.create(model="ds-leak", messages=[{"role": "user", "content": "hello"}])
        assert token not in (r.choices[0].message.content or "")
    finally:
        srv.stop()  # the writer flushes on shutdown
        cloud.stop()
        local.stop()
        keys.close()

    ch = clickhouse_client(clickhouse_server)
    rows = ch.execute(f"SELECT * FROM default.{table}")
    assert len(rows) == 7
    dump = json.dumps([[str(v) for v in r] for r in rows])
    for value in (secret, token, *emails):
        assert value not in dump
    assert "[email]" in dump  # the redacted prompts are there, masked
    # And redline itself finds nothing of them when it scans the table.
    os.environ[FINGERPRINT_ENV] = KEY
    try:
        _, recs, summary = run_redline_scan([clickhouse_server.url("default"), "--full", "--tables",
                                                f"default.{table}"], tmp_path)
    finally:
        del os.environ[FINGERPRINT_ENV]
    assert summary["tables"] and summary["tables"][0]["rows"] == 7
    fp = Fingerprinter(KEY.encode())
    planted = {fp(v) for v in (secret, token, *emails)}
    assert not planted & {r["fingerprint"] for r in recs}
    assert not {r["type"] for r in recs} & {"openai-project-key", "github-pat", "email"}, recs
