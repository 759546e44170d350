"""``--inspect``: what an ``open`` endpoint would give away, read-only.

ClickHouse (native, else HTTP) and PostgreSQL: the database scanner's backends enumerate tables, count rows and
read a sample per table, which the engine scans; ClickHouse queries go through :mod:`redline.probe.chsql` (every
query allow-listed, ``readonly=1`` on native, GET on HTTP), PostgreSQL runs in read-only transactions with
``require_auth=none`` (libpq refuses if the server asks for any password). Redis: key count per database and
``GETRANGE key 0 65535`` of a sample of keys (string values only), scanned by the engine.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from redline.engine import Scanner
from redline.probe import chsql
from redline.probe.protocols import RespError, resp_command, resp_read
from redline.probe.wire import Conn, ProtocolError
from redline.scan.db import Column, DbError, DbUrl, Read, Table, TableStats, scan_backend

REDIS_VALUE_CAP = 65536
HTTP_RESPONSE_CAP = 64 << 20
KIND_WORDS = {"secret": "secret(s)", "pii": "personal data value(s)"}


def describe(table: str, rows: int | None, sampled: int, by_kind: Counter[str], by_type: Counter[str],
             *, estimate: bool = False) -> str:
    """``default.log_stream: 1,048,576 rows; sample of 1,000 holds chat transcripts and 37 secret(s) (...)``."""
    head = f"{table}: " + (f"{'~' if estimate else ''}{rows:,} rows" if rows is not None else "rows unknown")
    parts: list[str] = []
    if by_kind.get("chat"):
        parts.append("chat transcripts")
    for kind in ("secret", "pii"):
        n = by_kind.get(kind, 0)
        if n:
            top = [t for t, _ in by_type.most_common() if not t.startswith("chat")][:3] if kind == "secret" else []
            parts.append(f"{n:,} {KIND_WORDS[kind]}" + (f" ({', '.join(top)})" if top else ""))
    what = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts) or "nothing the " \
        "engine flags"
    sample = "all rows" if rows is not None and sampled >= rows else f"sample of {sampled:,}"
    return f"{head}; {sample} hold{'' if sample == 'all rows' else 's'} {what}"


def _table_entry(ts: TableStats, rows: int | None, estimate: bool = False) -> dict[str, Any]:
    by_kind: Counter[str] = Counter()
    by_type: Counter[str] = Counter()
    examples: list[dict[str, str]] = []
    for c in ts.columns:
        by_kind.update(c.by_kind)
        by_type.update(c.by_type)
        examples.extend({"column": c.name, **e} for e in c.examples)
    return {"table": ts.table, "rows": rows, "rows_estimated": estimate, "sampled": ts.rows,
            "method": ts.method, "findings": sum(by_kind.values()), "by_kind": dict(by_kind),
            "by_type": dict(by_type.most_common()), "chat": by_kind.get("chat", 0) > 0,
            "examples": examples[:5], "summary": describe(ts.table, rows, ts.rows, by_kind, by_type,
                                                          estimate=estimate),
            **({"error": ts.error} if ts.error else {})}


def _finish(service: str, via: str, tables: list[dict[str, Any]], errors: list[str]) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    for t in tables:
        kinds.update(t["by_kind"])
    return {"service": service, "via": via, "tables": tables, "findings": sum(kinds.values()),
            "by_kind": dict(kinds), "errors": errors}


# -- ClickHouse -----------------------------------------------------------------------------------------

def _guarded_native(host: str, port: int, timeout: float, secure: bool) -> Any:
    from redline.scan.db_clickhouse import ClickHouseBackend

    class GuardedClickHouse(ClickHouseBackend):
        def __init__(self, u: DbUrl, timeout: float) -> None:
            super().__init__(u, timeout)  # runs only "SELECT version()" (allow-listed) before the guard
            self.client = chsql.GuardedClient(self.client)

    u = DbUrl("clickhouse", host=host, port=port, user="default", password="",
              params={"secure": "1"} if secure else {}, raw=f"clickhouse://default@{host}:{port}/")
    return GuardedClickHouse(u, timeout)


class ClickHouseHttpBackend:
    """The database scanner's Backend over ClickHouse's HTTP interface (GET only, allow-listed queries)."""

    read_only = "yes (HTTP GET queries are read-only)"

    def __init__(self, host: str, port: int, timeout: float, tls: bool = False) -> None:
        import httpx

        scheme = "https" if tls else "http"
        h = f"[{host}]" if ":" in host else host
        self.base = f"{scheme}://{h}:{port}/"
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, read=max(timeout, 60)), verify=False,
                                   headers={"User-Agent": "redline-probe"})

    def query(self, sql: str) -> dict[str, Any]:
        q = chsql.check(sql + " FORMAT JSONCompact", allow_format=True)
        body = bytearray()
        with self.client.stream("GET", self.base, params={"query": q}) as rep:
            for chunk in rep.iter_bytes():
                body += chunk
                if len(body) > HTTP_RESPONSE_CAP:
                    raise DbError(f"reply over {HTTP_RESPONSE_CAP >> 20} MiB")
            if rep.status_code != 200:
                raise DbError(f"HTTP {rep.status_code}: {bytes(body[:200]).decode('utf-8', 'replace')}")
        doc = json.loads(body.decode("utf-8", "replace"))
        if not isinstance(doc, dict):
            raise DbError("unexpected reply")
        return doc

    def rows(self, sql: str) -> list[list[Any]]:
        data: list[list[Any]] = self.query(sql).get("data", [])
        return data

    def tables(self) -> Iterator[Table]:
        from redline.scan.db_clickhouse import READABLE_ENGINES, SKIP_DATABASES, text_like

        dbs = [r[0] for r in self.rows("SHOW DATABASES") if r[0] not in SKIP_DATABASES]
        for db in dbs:
            meta = {r[0]: r[1] for r in self.rows(f"SELECT name, engine FROM system.tables WHERE database = "
                                                    f"'{_lit(db)}'")}
            cols: dict[str, list[Column]] = {}
            for tname, cname, ctype in self.rows(f"SELECT table, name, type FROM system.columns WHERE database = "
                                                 f"'{_lit(db)}'"):
                cols.setdefault(tname, []).append(Column(cname, ctype))
            for name, engine in sorted(meta.items()):
                if not (engine.endswith("MergeTree") or engine in READABLE_ENGINES):
                    continue
                yield Table(db, name, [c for c in cols.get(name, []) if text_like(c.type)])

    def count(self, table: Table) -> int:
        return int(self.rows(f"SELECT count() FROM {chsql.quote_ident(table.database)}."
                             f"{chsql.quote_ident(table.name)}")[0][0])

    def read(self, table: Table, sample: int | None, batch_size: int) -> Read:
        rel = f"{chsql.quote_ident(table.database)}.{chsql.quote_ident(table.name)}"
        cols = ", ".join(chsql.quote_ident(c.name) for c in table.columns)
        n = sample or 1000
        data = self.rows(f"SELECT {cols} FROM {rel} LIMIT {int(n)}")
        rows = [(i, *r) for i, r in enumerate(data)]
        return Read(f"first {n} rows (HTTP)", iter([rows]), len(rows))

    def close(self) -> None:
        self.client.close()


def _lit(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


def inspect_clickhouse(host: str, port: int, *, http: bool, timeout: float, scanner: Scanner, sample: int,
                       tls: bool = False) -> dict[str, Any]:
    try:
        backend: Any = (ClickHouseHttpBackend(host, port, timeout, tls) if http
                        else _guarded_native(host, port, timeout, tls))
    except DbError as exc:
        return _finish("clickhouse", "http" if http else "native", [], [str(exc)])
    try:
        stats, _, errors = scan_backend(backend, scanner, lambda rec: None, sample=sample, batch_size=sample)
        tables = []
        for ts in stats:
            db, _, name = ts.table.partition(".")
            try:
                rows = (backend.count(Table(db, name, [])) if http else
                        int(backend.client.execute(f"SELECT count() FROM {chsql.quote_ident(db)}."
                                                   f"{chsql.quote_ident(name)}")[0][0]))
            except Exception:
                rows = None
            tables.append(_table_entry(ts, rows))
    except (DbError, chsql.QueryRefused) as exc:
        return _finish("clickhouse", "http" if http else "native", [], [str(exc)])
    finally:
        backend.close()
    return _finish("clickhouse", "http" if http else "native", tables, errors)


# -- PostgreSQL -----------------------------------------------------------------------------------------

def inspect_postgres(host: str, port: int, *, user: str, timeout: float, scanner: Scanner,
                     sample: int) -> dict[str, Any]:
    from redline.scan.db_postgres import PostgresBackend

    # require_auth=none: libpq gives up if the server asks for any password, so neither ~/.pgpass nor
    # $PGPASSWORD can ever be sent (the endpoint was seen accepting the role without one).
    u = DbUrl("postgresql", host=host, port=port, user=user, password=None, database=None,
              params={"require_auth": "none", "sslmode": "disable"},
              raw=f"postgresql://{user}@{host}:{port}/")
    try:
        backend = PostgresBackend(u, timeout)
    except DbError as exc:
        return _finish("postgresql", "libpq", [], [str(exc)])
    reltuples: dict[str, float] = {}
    orig_tables = backend.tables

    def tables() -> Iterator[Table]:
        for t in orig_tables():
            reltuples[t.full_name] = float(t.extra.get("reltuples") or -1)
            yield t

    backend.tables = tables  # type: ignore[method-assign]
    try:
        stats, _, errors = scan_backend(backend, scanner, lambda rec: None, sample=sample, batch_size=sample)
    except DbError as exc:
        return _finish("postgresql", "libpq", [], [str(exc)])
    finally:
        backend.close()
    out = []
    for ts in stats:
        est = reltuples.get(ts.table, -1)
        if ts.method.startswith("all"):
            out.append(_table_entry(ts, ts.rows))  # the whole table was read: an exact count
        elif est >= ts.rows:
            out.append(_table_entry(ts, int(est), estimate=True))
        else:
            out.append(_table_entry(ts, None))
    return _finish("postgresql", "libpq", out, errors)


# -- Redis ----------------------------------------------------------------------------------------------

async def inspect_redis(host: str, port: int, *, timeout: float, scanner: Scanner, sample: int,
                        keyspace: dict[str, int]) -> dict[str, Any]:
    cap = sample * (REDIS_VALUE_CAP + 1024) + (4 << 20)
    conn = await Conn.open(host, port, timeout=timeout, cap=cap)
    tables: list[dict[str, Any]] = []
    errors: list[str] = []
    left = sample
    try:
        for dbname, nkeys in sorted(keyspace.items(), key=lambda kv: int(kv[0][2:])):
            if left <= 0:
                break
            async with asyncio.timeout(timeout * 10):
                await conn.send(resp_command("SELECT", dbname[2:]))
                await resp_read(conn)
                keys = await _redis_keys(conn, min(left, nkeys))
                values = await _redis_values(conn, keys)
            left -= len(keys)
            by_kind: Counter[str] = Counter()
            by_type: Counter[str] = Counter()
            examples: list[dict[str, str]] = []
            for key, value in values:
                for f in scanner.scan_text(value):
                    by_kind[f.kind] += 1
                    by_type[f.type] += 1
                    if len(examples) < 5 and all(e["type"] != f.type for e in examples):
                        examples.append({"key": key[:80], "type": f.type, "fingerprint": f.fingerprint,
                                         "snippet": f.snippet})
            tables.append({"table": dbname, "rows": nkeys, "rows_estimated": False, "sampled": len(keys),
                           "strings": len(values), "method": f"SCAN + GETRANGE 0..{REDIS_VALUE_CAP - 1}",
                           "findings": sum(by_kind.values()), "by_kind": dict(by_kind),
                           "by_type": dict(by_type.most_common()), "chat": by_kind.get("chat", 0) > 0,
                           "examples": examples,
                           "summary": describe(dbname, nkeys, len(keys), by_kind, by_type).replace(" rows", " keys")})
    except (ProtocolError, RespError, OSError, TimeoutError) as exc:
        errors.append(f"redis: {type(exc).__name__}: {str(exc)[:120]}")
    finally:
        await conn.close()
    return _finish("redis", "RESP", tables, errors)


async def _redis_keys(conn: Conn, want: int) -> list[bytes]:
    keys: list[bytes] = []
    cursor = b"0"
    for _ in range(max(1, want // 50) + 20):
        await conn.send(resp_command("SCAN", cursor, "COUNT", "200"))
        reply = await resp_read(conn, bulk_cap=1 << 16)
        if not isinstance(reply, list) or len(reply) != 2:
            raise ProtocolError("unexpected SCAN reply")
        cursor = reply[0]
        keys.extend(k for k in reply[1] if isinstance(k, bytes))
        if cursor == b"0" or len(keys) >= want:
            break
    return list(dict.fromkeys(keys))[:want]


async def _redis_values(conn: Conn, keys: list[bytes]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i in range(0, len(keys), 100):
        batch = keys[i:i + 100]
        await conn.send(b"".join(resp_command("GETRANGE", k, "0", str(REDIS_VALUE_CAP - 1)) for k in batch))
        for k in batch:
            try:
                v = await resp_read(conn, bulk_cap=REDIS_VALUE_CAP)
            except RespError:
                continue  # WRONGTYPE: not a string
            if isinstance(v, bytes) and v:
                out.append((k.decode("utf-8", "replace"), v.decode("utf-8", "replace")))
    return out


# -- all open endpoints ---------------------------------------------------------------------------------

def inspect_results(results: list[Any], *, timeout: float, scanner: Scanner, sample: int, pg_user: str) -> None:
    """Fill ``result.inspect`` for open ClickHouse, PostgreSQL and Redis endpoints (one ClickHouse pass per host:
    native when it is open, else HTTP); a finding raises the severity to critical."""
    native_by_host = {r.host: r for r in results if r.verdict == "open" and r.service == "clickhouse-native"}
    for r in results:
        if r.verdict != "open":
            continue
        if r.service == "clickhouse-native":
            r.inspect = inspect_clickhouse(r.host, r.port, http=False, timeout=timeout, scanner=scanner,
                                           sample=sample, tls=r.tls)
        elif r.service == "clickhouse-http":
            other = native_by_host.get(r.host)
            if other is not None:
                r.inspect = {"service": "clickhouse", "via": f"native at {other.label}", "tables": [], "findings": 0,
                             "by_kind": {}, "errors": []}
                continue
            r.inspect = inspect_clickhouse(r.host, r.port, http=True, timeout=timeout, scanner=scanner,
                                           sample=sample, tls=r.tls)
        elif r.service == "postgresql" and r.details.get("session"):
            r.inspect = inspect_postgres(r.host, r.port, user=pg_user, timeout=timeout, scanner=scanner,
                                         sample=sample)
        elif r.service == "redis":
            keyspace = r.details.get("keyspace") or {}
            r.inspect = asyncio.run(inspect_redis(r.host, r.port, timeout=timeout, scanner=scanner, sample=sample,
                                                  keyspace=keyspace))
        else:
            continue
        if r.inspect and r.inspect.get("findings"):
            r.severity = "critical"
            r.evidence.append(f"--inspect: {r.inspect['findings']:,} finding(s) in sampled data")
