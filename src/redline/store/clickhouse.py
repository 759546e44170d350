"""ClickHouse audit store: the same interface and behaviour as the SQLite store, for fleets of gateways.

``open_store("clickhouse://redline:PASSWORD@127.0.0.1:9000/redline?table=audit_events&retention_days=90")``

Native protocol through ``clickhouse-driver`` (works with Debian's ClickHouse 18.16 and with current servers).
URL parameters: ``secure=1`` (TLS; ``clickhouses://`` means the same), ``verify=0`` (skip certificate checks),
``ca_certs=/path``, ``table=NAME`` (default ``audit_events``), ``retention_days=N``, ``connect_timeout=S``.

Schema (see docs/clickhouse-store.md): one MergeTree table partitioned by UTC day and ordered by
``(toStartOfHour(ts), team, action, ts_us)``, so the dashboard's time-range aggregations and its team/action
filters read only the granules they need. Retention: a ``TTL`` clause on servers that have it (19.6+),
otherwise whole day partitions older than ``retention_days`` are dropped (at open and hourly while writing).
``purge(before)`` drops whole partitions and deletes the remaining rows of the boundary day with a mutation.

Secure by default: :func:`check_url` refuses the ``default`` user with an empty password and unencrypted
connections to hosts other than loopback, unless ``allow_insecure`` is given (``--allow-insecure-store``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redline.store import StoreSecurityError
from redline.store.base import (
    AuditEvent,
    FindingRow,
    FingerprintRow,
    GroupBy,
    UsageRow,
    as_utc,
    check_group,
    usage_row,
)
from redline.store.sqlite import StoreError, from_us, to_us

log = logging.getLogger("redline.store.clickhouse")

DEFAULT_TABLE = "audit_events"
TTL_MIN_VERSION = (19, 6)
INSERT_CHUNK = 50_000  # rows per INSERT (a write() of more is split)
POOL_SIZE = 8
RETENTION_CHECK_SECONDS = 3600.0
MUTATION_TIMEOUT = 120.0
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
_OUR_PARAMS = {"table", "retention_days", "secure", "verify", "ca_certs", "connect_timeout",
               "send_receive_timeout", "compression", "allow_insecure"}


# ---------------------------------------------------------------------------------------------------- URL


@dataclass
class ClickHouseUrl:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str
    table: str
    secure: bool
    verify: bool
    ca_certs: str | None
    retention_days: int | None
    connect_timeout: float
    send_receive_timeout: float
    compression: bool

    @property
    def display(self) -> str:
        scheme = "clickhouses" if self.secure else "clickhouse"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.database}?table={self.table}"


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def parse_url(url: str) -> ClickHouseUrl:
    """Parse ``clickhouse://`` / ``clickhouses://`` URLs; errors never repeat the password."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("clickhouse", "clickhouses", "clickhouse+native"):
        raise StoreError(f"not a ClickHouse URL: {scheme}://…")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(params) - _OUR_PARAMS
    if unknown:
        raise StoreError(f"unknown ClickHouse store parameter(s): {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(_OUR_PARAMS))})")
    secure = scheme == "clickhouses" or _truthy(params.get("secure", ""))
    try:
        port = parts.port or (9440 if secure else 9000)
    except ValueError:
        raise StoreError("the ClickHouse URL has a bad port") from None
    host = parts.hostname or "localhost"
    database = unquote(parts.path.lstrip("/")) or "default"
    table = params.get("table") or DEFAULT_TABLE
    for what, name in (("database", database), ("table", table)):
        if not _IDENT.match(name):
            raise StoreError(f"ClickHouse {what} name {name[:70]!r}: use letters, digits and _")
    retention: int | None = None
    if params.get("retention_days"):
        try:
            retention = int(params["retention_days"])
        except ValueError:
            raise StoreError("retention_days must be a whole number of days") from None
        if retention < 1:
            raise StoreError("retention_days must be at least 1")
    try:
        connect_timeout = float(params.get("connect_timeout") or 10)
        send_receive_timeout = float(params.get("send_receive_timeout") or 300)
    except ValueError:
        raise StoreError("connect_timeout and send_receive_timeout must be numbers of seconds") from None
    return ClickHouseUrl(
        host=host, port=port, user=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "", database=database, table=table,
        secure=secure, verify=not (params.get("verify") and not _truthy(params["verify"])),
        ca_certs=params.get("ca_certs") or None, retention_days=retention, connect_timeout=connect_timeout,
        send_receive_timeout=send_receive_timeout, compression=_truthy(params.get("compression", "")))


def is_loopback(host: str) -> bool:
    h = host.strip("[]").lower()
    if h in ("localhost", "localhost.localdomain", "ip6-localhost") or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def security_problems(u: ClickHouseUrl) -> list[str]:
    problems = []
    if u.user == "default" and not u.password:
        problems.append("it logs in as the 'default' user with an empty password (anyone who reaches the server "
                        "can read and delete the audit log): create a user with a password for redline")
    if not u.secure and not is_loopback(u.host):
        problems.append(f"the connection to {u.host} is not encrypted (the password and audit events would cross "
                        "the network in clear): use clickhouses:// or ?secure=1 (server port 9440 with TLS), or "
                        "run ClickHouse on loopback")
    if u.secure and not u.verify and not is_loopback(u.host):
        problems.append(f"TLS certificate checks are off for {u.host} (verify=0): anyone in the path can "
                        "impersonate the server; give ca_certs=/path/to/ca.pem instead")
    return problems


def check_url(url: str, *, allow_insecure: bool = False) -> ClickHouseUrl:
    """Parse the URL and apply the secure defaults: raises :class:`StoreSecurityError` with every reason."""
    u = parse_url(url)
    problems = security_problems(u)
    if problems and not allow_insecure:
        raise StoreSecurityError(f"refusing to use the ClickHouse audit store {u.display}: "
                                 + "; and ".join(problems)
                                 + " (--allow-insecure-store or store.allow_insecure: true overrides this)")
    for p in problems:
        log.warning("insecure ClickHouse audit store allowed: %s", p)
    return u


def _message(exc: BaseException, password: str = "") -> str:
    text = str(exc).split("Stack trace:", 1)[0]
    text = re.sub(r"^Code: \d+\.\s*", "", text.strip()).replace("DB::Exception: ", "")
    text = " ".join(text.split()).rstrip(".") or type(exc).__name__
    return text.replace(password, "***") if password else text


# ---------------------------------------------------------------------------------------------------- pool


class _Pool:
    """clickhouse-driver clients are not thread-safe: one per concurrent caller, reused."""

    def __init__(self, kwargs: dict[str, Any], size: int = POOL_SIZE) -> None:
        from clickhouse_driver import Client  # type: ignore[import-untyped]

        self._client_cls = Client
        self._kwargs = kwargs
        self._size = size
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> Any:
        with self._lock:
            if self._closed:
                raise StoreError("the ClickHouse store is closed")
            if self._idle:
                return self._idle.pop()
        return self._client_cls(**self._kwargs)

    def give(self, client: Any, ok: bool) -> None:
        with self._lock:
            if ok and not self._closed and len(self._idle) < self._size:
                self._idle.append(client)
                return
        with contextlib.suppress(Exception):
            client.disconnect()

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        c = self.take()
        ok = False
        try:
            yield c
            ok = True
        finally:
            self.give(c, ok)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for c in idle:
            with contextlib.suppress(Exception):
                c.disconnect()


# ---------------------------------------------------------------------------------------------------- schema

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ts", "DateTime('UTC')"),  # whole seconds: partitioning, primary key, TTL
    ("ts_us", "Int64"),  # exact time in microseconds since the epoch
    ("request_id", "String"),
    ("key_id", "String"),  # '' = no key (refused before authentication)
    ("team", "String"),  # '' = no key
    ("user", "Nullable(String)"),
    ("provider", "String"),
    ("model", "String"),
    ("endpoint", "String"),
    ("action", "String"),
    ("status", "UInt16"),
    ("stream", "UInt8"),
    ("finding_types", "Array(String)"),  # finding_counts as two parallel arrays (18.16 has no Map)
    ("finding_type_counts", "Array(UInt32)"),
    ("finding_kinds", "Array(String)"),
    ("finding_kind_counts", "Array(UInt32)"),
    ("fingerprints", "Array(String)"),
    ("latency_ms", "Float64"),
    ("upstream_ms", "Nullable(Float64)"),
    ("prompt_tokens", "UInt64"),
    ("completion_tokens", "UInt64"),
    ("cost_usd", "Float64"),
    ("rerouted_from", "Nullable(String)"),
    ("error", "Nullable(String)"),
    ("redacted_prompt", "Nullable(String)"),
)
_NAMES = tuple(n for n, _ in _COLUMNS)
_SELECT = ", ".join(f"`{n}`" for n in _NAMES)
_GROUP_EXPR: dict[str, str] = {"team": "if(team = '', '-', team)", "key": "if(key_id = '', '-', key_id)",
                               "model": "model", "provider": "provider"}
_AGGREGATES = """count(), countIf(action = 'block'), countIf(action IN ('redact', 'pseudonymize')),
    countIf(action = 'reroute' OR rerouted_from IS NOT NULL), sum(prompt_tokens), sum(completion_tokens),
    sum(cost_usd), countIf(action = 'denied'), countIf(action = 'error')"""


def parse_version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def create_table_sql(database: str, table: str, *, version: tuple[int, ...], retention_days: int | None) -> str:
    cols = ",\n    ".join(f"`{n}` {t}" for n, t in _COLUMNS)
    ttl = ""
    if retention_days and version >= TTL_MIN_VERSION:
        ttl = f"\nTTL ts + INTERVAL {int(retention_days)} DAY"
    return (f"CREATE TABLE IF NOT EXISTS `{database}`.`{table}` (\n    {cols}\n) ENGINE = MergeTree\n"
            f"PARTITION BY toYYYYMMDD(ts)\nORDER BY (toStartOfHour(ts), team, action, ts_us){ttl}\n"
            "SETTINGS index_granularity = 8192")


def _pairs(d: dict[str, int]) -> tuple[list[str], list[int]]:
    keys = sorted(d)
    return keys, [int(d[k]) for k in keys]


def _row(e: AuditEvent) -> tuple[Any, ...]:
    us = to_us(e.ts)
    ft, fc = _pairs(e.finding_counts)
    kt, kc = _pairs(e.finding_kinds)
    return (
        from_us(us - us % 1_000_000), us, e.request_id, e.key_id or "", e.team or "", e.user, e.provider, e.model,
        e.endpoint, e.action, int(e.status), int(bool(e.stream)), ft, fc, kt, kc, list(e.fingerprints),
        float(e.latency_ms), None if e.upstream_ms is None else float(e.upstream_ms), max(0, int(e.prompt_tokens)),
        max(0, int(e.completion_tokens)), float(e.cost_usd), e.rerouted_from, e.error, e.redacted_prompt,
    )


def _event(r: Sequence[Any]) -> AuditEvent:
    (_, us, rid, key_id, team, user, provider, model, endpoint, action, status, stream, ft, fc, kt, kc, fps,
     latency, upstream, pt, ct, cost, rerouted, error, prompt) = r
    return AuditEvent(
        ts=from_us(int(us)), request_id=rid, key_id=key_id or None, team=team or None, user=user,
        provider=provider, model=model, endpoint=endpoint, action=action, status=int(status), stream=bool(stream),
        finding_counts=dict(zip(ft, (int(x) for x in fc), strict=False)),
        finding_kinds=dict(zip(kt, (int(x) for x in kc), strict=False)), fingerprints=list(fps),
        latency_ms=float(latency), upstream_ms=None if upstream is None else float(upstream),
        prompt_tokens=int(pt), completion_tokens=int(ct), cost_usd=float(cost), rerouted_from=rerouted,
        error=error, redacted_prompt=prompt)


def _range(since: datetime | None, until: datetime | None, **equal: str | None) -> tuple[list[str], dict[str, Any]]:
    """Conditions on both ``ts`` (so the primary key and partition pruning apply) and ``ts_us`` (exact), and
    ``column = value`` for each ``equal`` value given."""
    where, params = ["1 = 1"], {}  # type: list[str], dict[str, Any]
    if since is not None:
        us = to_us(since)
        where += ["ts >= toDateTime(%(since_s)s)", "ts_us >= %(since_us)s"]
        params.update(since_s=max(0, us // 1_000_000), since_us=us)
    if until is not None:
        us = to_us(until)
        where += ["ts <= toDateTime(%(until_s)s)", "ts_us < %(until_us)s"]
        params.update(until_s=max(0, -(-us // 1_000_000)), until_us=us)
    for col, value in equal.items():
        if value is not None:
            where.append(f"{col} = %({col})s")
            params[col] = value
    return where, params


# ---------------------------------------------------------------------------------------------------- store


class ClickHouseAuditStore:
    """:class:`~redline.store.base.AuditStore` on ClickHouse (18.16 or later)."""

    def __init__(self, url: str, *, allow_insecure: bool = False) -> None:
        u = check_url(url, allow_insecure=allow_insecure or _truthy(dict(parse_qsl(urlsplit(url).query))
                                                                      .get("allow_insecure", "")))
        self.url = u
        kwargs: dict[str, Any] = dict(
            host=u.host, port=u.port, user=u.user, password=u.password, database=u.database, secure=u.secure,
            verify=u.verify, connect_timeout=u.connect_timeout, send_receive_timeout=u.send_receive_timeout,
            client_name="redline-audit", compression=u.compression,
            settings={"max_block_size": 10_000})
        if u.ca_certs:
            kwargs["ca_certs"] = u.ca_certs
        self._t = f"`{u.database}`.`{u.table}`"
        self._pool = _Pool(kwargs)
        self._last_retention = 0.0
        self._purge_lock = threading.Lock()
        try:
            with self._pool.client() as c:
                self.server_version = str(c.execute("SELECT version()")[0][0])
                self.version = parse_version(self.server_version)
                self.supports_ttl = self.version >= TTL_MIN_VERSION
                self._ensure_table(c)
        except StoreError:
            self._pool.close()
            raise
        except Exception as exc:
            self._pool.close()
            raise StoreError(f"cannot use the ClickHouse audit store {u.display}: {_message(exc, u.password)}"
                             ) from None
        if u.retention_days and not self.supports_ttl:
            self.apply_retention()

    def _ensure_table(self, c: Any) -> None:
        u = self.url
        exists = c.execute(f"EXISTS TABLE {self._t}")[0][0]
        if not exists:
            c.execute(create_table_sql(u.database, u.table, version=self.version, retention_days=u.retention_days))
        cols = {r[0]: r[1] for r in c.execute(f"DESCRIBE TABLE {self._t}")}
        missing = [n for n in _NAMES if n not in cols]
        if missing:
            raise StoreError(f"{u.database}.{u.table} exists but is not a redline audit table "
                             f"(missing {', '.join(missing[:5])}); pick another ?table=")
        if exists and u.retention_days and self.supports_ttl:
            with contextlib.suppress(Exception):  # a read-only user may not; retention is the writer's job
                c.execute(f"ALTER TABLE {self._t} MODIFY TTL ts + INTERVAL {int(u.retention_days)} DAY")

    # ------------------------------------------------------------------ writing

    def write(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        rows = [_row(e) for e in events]
        cols = ", ".join(f"`{n}`" for n in _NAMES)
        with self._pool.client() as c:
            for i in range(0, len(rows), INSERT_CHUNK):
                c.execute(f"INSERT INTO {self._t} ({cols}) VALUES", rows[i:i + INSERT_CHUNK])
        if self.url.retention_days and not self.supports_ttl and \
                time.monotonic() - self._last_retention > RETENTION_CHECK_SECONDS:
            try:
                self.apply_retention()
            except Exception as exc:  # never lose the write over housekeeping
                log.warning("ClickHouse audit retention failed: %s", _message(exc, self.url.password))

    # ------------------------------------------------------------------ reading

    def _query(self, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        with self._pool.client() as c:
            rows: list[Any] = c.execute(sql, params or {})
            return rows

    def events(self, since: datetime, until: datetime | None = None, *, limit: int | None = None,
               team: str | None = None, action: str | None = None) -> Iterator[AuditEvent]:
        where, params = _range(since, until, team=team, action=action)
        lim = f" LIMIT {int(limit)}" if limit is not None else ""
        if limit is not None and limit <= 0:
            return
        sql = f"SELECT {_SELECT} FROM {self._t} WHERE {' AND '.join(where)} ORDER BY ts_us, request_id{lim}"
        # One streamed query (blocks of 10 000 rows) on a client of its own while the caller iterates.
        c = self._pool.take()
        ok = False
        try:
            for r in c.execute_iter(sql, params):
                yield _event(r)
            ok = True
        finally:
            self._pool.give(c, ok)

    def count(self, since: datetime | None = None, until: datetime | None = None) -> int:
        where, params = _range(since, until)
        return int(self._query(f"SELECT count() FROM {self._t} WHERE {' AND '.join(where)}", params)[0][0])

    def usage(self, since: datetime, by: GroupBy, *, until: datetime | None = None) -> list[UsageRow]:
        expr = _GROUP_EXPR.get(by)
        if expr is None:
            raise ValueError(f"cannot group usage by {by!r}: use team, model, provider or key")
        where, params = _range(since, until)
        rows = self._query(f"SELECT {expr} AS g, {_AGGREGATES} FROM {self._t} WHERE {' AND '.join(where)} "
                           "GROUP BY g ORDER BY sum(cost_usd) DESC, count() DESC, g", params)
        return [usage_row(str(r[0]), r[1:]) for r in rows]

    def spend(self, since: datetime, *, key_id: str | None = None, team: str | None = None) -> float:
        where, params = _range(since, None, key_id=key_id, team=team)
        rows = self._query(f"SELECT sum(cost_usd) FROM {self._t} WHERE {' AND '.join(where)}", params)
        return float(rows[0][0] or 0.0) if rows else 0.0

    def recent(self, since: datetime, *, limit: int = 100, team: str | None = None, action: str | None = None,
               key_id: str | None = None, provider: str | None = None,
               model: str | None = None) -> list[AuditEvent]:
        where, params = _range(since, None, team=team, action=action, key_id=key_id, provider=provider, model=model)
        rows = self._query(f"SELECT {_SELECT} FROM {self._t} WHERE {' AND '.join(where)} "
                           f"ORDER BY ts_us DESC, request_id DESC LIMIT {max(0, int(limit))}", params)
        return [_event(r) for r in rows]

    def timeseries(self, since: datetime, until: datetime | None = None, *, bucket_seconds: int = 3600,
                   by: GroupBy | None = None) -> list[tuple[datetime, UsageRow]]:
        if bucket_seconds < 1:
            raise ValueError("bucket_seconds must be at least 1")
        check_group(by)
        g = _GROUP_EXPR[by] if by is not None else "''"
        width = int(bucket_seconds) * 1_000_000
        where, params = _range(since, until)
        rows = self._query(f"SELECT intDiv(ts_us, {width}) * {width} AS b, {g} AS g, {_AGGREGATES} "
                           f"FROM {self._t} WHERE {' AND '.join(where)} GROUP BY b, g ORDER BY b, g", params)
        return [(from_us(int(r[0])), usage_row(str(r[1]), r[2:])) for r in rows]

    def findings(self, since: datetime, until: datetime | None = None, *,
                 by: GroupBy | None = None) -> list[FindingRow]:
        check_group(by)
        g = _GROUP_EXPR[by] if by is not None else "''"
        where, params = _range(since, until)
        rows = self._query(f"SELECT {g} AS g, ft, sum(fc) AS n, count() FROM {self._t} "
                           "ARRAY JOIN finding_types AS ft, finding_type_counts AS fc "
                           f"WHERE {' AND '.join(where)} GROUP BY g, ft ORDER BY n DESC, g, ft", params)
        return [FindingRow(group=str(r[0]), type=str(r[1]), count=int(r[2]), events=int(r[3])) for r in rows]

    def fingerprints(self, since: datetime, until: datetime | None = None, *,
                     limit: int = 50) -> list[FingerprintRow]:
        where, params = _range(since, until)
        rows = self._query(
            f"SELECT fp, count() AS n, min(ts_us), max(ts_us), groupUniqArray({_GROUP_EXPR['team']}), "
            f"groupUniqArray({_GROUP_EXPR['key']}) FROM {self._t} ARRAY JOIN fingerprints AS fp "
            f"WHERE {' AND '.join(where)} GROUP BY fp ORDER BY n DESC, fp LIMIT {max(0, int(limit))}", params)
        return [FingerprintRow(fingerprint=str(r[0]), events=int(r[1]), first_seen=from_us(int(r[2])),
                               last_seen=from_us(int(r[3])), teams=sorted(r[4]), keys=sorted(r[5])) for r in rows]

    # ------------------------------------------------------------------ retention

    def _partitions(self, c: Any) -> list[str]:
        rows = c.execute("SELECT DISTINCT partition FROM system.parts WHERE database = %(d)s AND table = %(t)s "
                         "AND active", {"d": self.url.database, "t": self.url.table})
        return sorted(str(r[0]).strip("'") for r in rows)

    def _drop_days_before(self, c: Any, day: datetime) -> int:
        """Drop whole partitions (UTC days) strictly before ``day``; returns how many."""
        limit = int(f"{day:%Y%m%d}")
        dropped = 0
        for p in self._partitions(c):
            if p.isdigit() and int(p) < limit:
                c.execute(f"ALTER TABLE {self._t} DROP PARTITION {int(p)}")
                dropped += 1
        return dropped

    def _wait_mutations(self, c: Any) -> None:
        deadline = time.monotonic() + MUTATION_TIMEOUT
        while True:
            left = c.execute("SELECT count() FROM system.mutations WHERE database = %(d)s AND table = %(t)s "
                             "AND is_done = 0", {"d": self.url.database, "t": self.url.table})[0][0]
            if not left:
                return
            if time.monotonic() > deadline:
                raise StoreError(f"the ClickHouse delete on {self.url.table} did not finish within "
                                 f"{MUTATION_TIMEOUT:.0f} s (it goes on in the background)")
            time.sleep(0.05)

    def apply_retention(self) -> int:
        """Drop the day partitions older than ``retention_days`` (servers without TTL). Returns partitions."""
        self._last_retention = time.monotonic()
        if not self.url.retention_days:
            return 0
        cutoff = datetime.now(UTC) - timedelta(days=self.url.retention_days)
        with self._purge_lock, self._pool.client() as c:
            return self._drop_days_before(c, cutoff)

    def purge(self, before: datetime) -> int:
        """Exact: counts the events, drops whole days before ``before``, then deletes the boundary day's
        earlier events with a mutation and waits for it."""
        before = as_utc(before)
        cutoff = to_us(before)
        with self._purge_lock, self._pool.client() as c:
            n = int(c.execute(f"SELECT count() FROM {self._t} WHERE ts_us < %(c)s", {"c": cutoff})[0][0])
            if not n:
                return 0
            self._drop_days_before(c, before)
            left = int(c.execute(f"SELECT count() FROM {self._t} WHERE ts_us < %(c)s", {"c": cutoff})[0][0])
            if left:
                c.execute(f"ALTER TABLE {self._t} DELETE WHERE ts_us < {int(cutoff)}")
                self._wait_mutations(c)
            return n

    def drop_table(self) -> None:
        """Remove the table (tests, and `redline` users starting over)."""
        with self._pool.client() as c:
            c.execute(f"DROP TABLE IF EXISTS {self._t}")

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> ClickHouseAuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(url: str, *, allow_insecure: bool = False) -> ClickHouseAuditStore:
    """The entry point :func:`redline.store.open_audit_store` uses for ``clickhouse://`` URLs."""
    return ClickHouseAuditStore(url, allow_insecure=allow_insecure)
