"""SQLite audit and key stores: embedded, one file, no server.

Both stores may share a file (their tables do not overlap). The database runs in WAL mode so the ``redline``
CLI can read usage and export audit events while a gateway process is writing. One connection per store,
guarded by a lock, so the store is safe to call from the event loop thread and from ``asyncio.to_thread``
workers alike.

Timestamps are stored as integer microseconds since the Unix epoch (UTC), which keeps range queries on an
index cheap and exact.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redline.store.base import (
    AuditEvent,
    FindingRow,
    FingerprintRow,
    GroupBy,
    KeyRecord,
    UsageRow,
    as_utc,
    check_group,
    usage_row,
)

SCHEMA_VERSION = 1
SECRET_PREFIX = "rl-"
SECRET_BODY_LEN = 40
KEY_ID_PREFIX = "rk_"
PAGE = 1000
PURGE_CHUNK = 5000

_SECRET_RE = re.compile(r"^rl-[A-Za-z0-9_-]{40}$")
_GROUP_COLUMNS: dict[str, str] = {"team": "team", "model": "model", "provider": "provider", "key": "key_id"}

_AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_events (
    id INTEGER PRIMARY KEY,
    ts_us INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    key_id TEXT,
    team TEXT,
    user TEXT,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    action TEXT NOT NULL,
    status INTEGER NOT NULL,
    stream INTEGER NOT NULL DEFAULT 0,
    finding_counts TEXT NOT NULL DEFAULT '{}',
    finding_kinds TEXT NOT NULL DEFAULT '{}',
    fingerprints TEXT NOT NULL DEFAULT '[]',
    latency_ms REAL NOT NULL DEFAULT 0,
    upstream_ms REAL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    rerouted_from TEXT,
    error TEXT,
    redacted_prompt TEXT
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit_events (ts_us);
CREATE INDEX IF NOT EXISTS audit_team_ts ON audit_events (team, ts_us);
CREATE INDEX IF NOT EXISTS audit_key_ts ON audit_events (key_id, ts_us);
CREATE INDEX IF NOT EXISTS audit_model_ts ON audit_events (model, ts_us);
CREATE INDEX IF NOT EXISTS audit_provider_ts ON audit_events (provider, ts_us);
"""

_KEY_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    hash_scheme TEXT NOT NULL DEFAULT 'sha256',
    team TEXT NOT NULL,
    user TEXT,
    name TEXT,
    created_us INTEGER NOT NULL,
    revoked_us INTEGER,
    admin INTEGER NOT NULL DEFAULT 0,
    budget_usd REAL,
    rpm INTEGER,
    models TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_team ON api_keys (team);
"""

_EVENT_COLUMNS = (
    "ts_us", "request_id", "key_id", "team", "user", "provider", "model", "endpoint", "action", "status", "stream",
    "finding_counts", "finding_kinds", "fingerprints", "latency_ms", "upstream_ms", "prompt_tokens",
    "completion_tokens", "cost_usd", "rerouted_from", "error", "redacted_prompt",
)
_INSERT_EVENT = (f"INSERT INTO audit_events ({', '.join(_EVENT_COLUMNS)}) "
                 f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS)})")


class StoreError(Exception):
    """The store cannot be opened or used (bad path, not a redline database, newer schema)."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(ts: datetime) -> int:
    return (as_utc(ts) - _EPOCH) // _US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


class _Db:
    """One connection, one lock, schema versioning."""

    def __init__(self, path: str | os.PathLike[str], component: str, schema: str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(f"cannot open {self.path}: folder {parent} does not exist")
        try:
            self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        self.lock = threading.RLock()
        try:
            with self.lock:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.execute("PRAGMA foreign_keys=ON")
                self.conn.execute("CREATE TABLE IF NOT EXISTS redline_schema "
                                  "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
                row = self.conn.execute("SELECT version FROM redline_schema WHERE component = ?",
                                        (component,)).fetchone()
                if row is not None and int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: {component} schema version {row[0]} is newer than this "
                                     f"redline supports ({SCHEMA_VERSION}); upgrade redline")
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in schema.split(";"):
                        if stmt.strip():
                            self.conn.execute(stmt)
                    self.conn.execute("INSERT OR IGNORE INTO redline_schema (component, version) VALUES (?, ?)",
                                      (component, SCHEMA_VERSION))
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(f"cannot open {self.path}: {exc} (is it a redline store?)") from None
        except StoreError:
            self.conn.close()
            raise

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def _event_row(e: AuditEvent) -> tuple[Any, ...]:
    return (
        to_us(e.ts), e.request_id, e.key_id, e.team, e.user, e.provider, e.model, e.endpoint, e.action,
        int(e.status), int(bool(e.stream)),
        json.dumps(e.finding_counts, sort_keys=True, separators=(",", ":")),
        json.dumps(e.finding_kinds, sort_keys=True, separators=(",", ":")),
        json.dumps(e.fingerprints, separators=(",", ":")),
        float(e.latency_ms), None if e.upstream_ms is None else float(e.upstream_ms),
        int(e.prompt_tokens), int(e.completion_tokens), float(e.cost_usd),
        e.rerouted_from, e.error, e.redacted_prompt,
    )


def _event_from_row(r: Sequence[Any]) -> AuditEvent:
    # r = (id, *_EVENT_COLUMNS)
    return AuditEvent(
        ts=from_us(r[1]), request_id=r[2], key_id=r[3], team=r[4], user=r[5], provider=r[6], model=r[7],
        endpoint=r[8], action=r[9], status=r[10], stream=bool(r[11]),
        finding_counts=json.loads(r[12]), finding_kinds=json.loads(r[13]), fingerprints=json.loads(r[14]),
        latency_ms=r[15], upstream_ms=r[16], prompt_tokens=r[17], completion_tokens=r[18], cost_usd=r[19],
        rerouted_from=r[20], error=r[21], redacted_prompt=r[22],
    )


class SqliteAuditStore:
    """The default :class:`~redline.store.base.AuditStore`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = _Db(path, "audit", _AUDIT_SCHEMA)
        self.path = self._db.path

    def write(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        rows = [_event_row(e) for e in events]
        with self._db.lock:
            conn = self._db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT_EVENT, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def events(self, since: datetime, until: datetime | None = None, *, limit: int | None = None,
               team: str | None = None, action: str | None = None) -> Iterator[AuditEvent]:
        where, params = self._range(since, until, team=team, action=action)
        cols = "id, " + ", ".join(_EVENT_COLUMNS)
        last: tuple[int, int] | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            page = PAGE if remaining is None else min(PAGE, remaining)
            w, p = list(where), list(params)
            if last is not None:  # keyset pagination: no lock held between pages
                w.append("(ts_us > ? OR (ts_us = ? AND id > ?))")
                p += [last[0], last[0], last[1]]
            sql = f"SELECT {cols} FROM audit_events WHERE {' AND '.join(w)} ORDER BY ts_us, id LIMIT ?"
            with self._db.lock:
                rows = self._db.conn.execute(sql, [*p, page]).fetchall()
            for r in rows:
                yield _event_from_row(r)
            if len(rows) < page:
                return
            last = (rows[-1][1], rows[-1][0])
            if remaining is not None:
                remaining -= len(rows)

    def count(self, since: datetime | None = None, until: datetime | None = None) -> int:
        """Events in ``[since, until)`` (either end open when None)."""
        where, params = self._range(since, until)
        with self._db.lock:
            row = self._db.conn.execute(f"SELECT COUNT(*) FROM audit_events WHERE {' AND '.join(where)}",
                                        params).fetchone()
        return int(row[0])

    _AGGREGATES = """COUNT(*), SUM(action = 'block'), SUM(action IN ('redact', 'pseudonymize')),
                   SUM(action = 'reroute' OR rerouted_from IS NOT NULL),
                   SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd),
                   SUM(action = 'denied'), SUM(action = 'error')"""

    def usage(self, since: datetime, by: GroupBy, *, until: datetime | None = None) -> list[UsageRow]:
        col = _GROUP_COLUMNS.get(by)
        if col is None:
            raise ValueError(f"cannot group usage by {by!r}: use team, model, provider or key")
        where, params = self._range(since, until)
        sql = f"""
            SELECT COALESCE({col}, '-') AS g, {self._AGGREGATES}
            FROM audit_events WHERE {' AND '.join(where)}
            GROUP BY g ORDER BY SUM(cost_usd) DESC, COUNT(*) DESC, g"""
        with self._db.lock:
            rows = self._db.conn.execute(sql, params).fetchall()
        return [usage_row(str(r[0]), r[1:]) for r in rows]

    def recent(self, since: datetime, *, limit: int = 100, team: str | None = None, action: str | None = None,
               key_id: str | None = None, provider: str | None = None,
               model: str | None = None) -> list[AuditEvent]:
        where, params = self._range(since, None, team=team, action=action, key_id=key_id, provider=provider,
                                    model=model)
        sql = (f"SELECT id, {', '.join(_EVENT_COLUMNS)} FROM audit_events WHERE {' AND '.join(where)} "
               "ORDER BY ts_us DESC, id DESC LIMIT ?")
        with self._db.lock:
            rows = self._db.conn.execute(sql, [*params, max(0, int(limit))]).fetchall()
        return [_event_from_row(r) for r in rows]

    def timeseries(self, since: datetime, until: datetime | None = None, *, bucket_seconds: int = 3600,
                   by: GroupBy | None = None) -> list[tuple[datetime, UsageRow]]:
        if bucket_seconds < 1:
            raise ValueError("bucket_seconds must be at least 1")
        check_group(by)
        g = f"COALESCE({_GROUP_COLUMNS[by]}, '-')" if by is not None else "''"
        width = int(bucket_seconds) * 1_000_000
        where, params = self._range(since, until)
        sql = f"""SELECT (ts_us / {width}) * {width} AS b, {g} AS g, {self._AGGREGATES}
                  FROM audit_events WHERE {' AND '.join(where)} GROUP BY b, g ORDER BY b, g"""
        with self._db.lock:
            rows = self._db.conn.execute(sql, params).fetchall()
        return [(from_us(int(r[0])), usage_row(str(r[1]), r[2:])) for r in rows]

    def findings(self, since: datetime, until: datetime | None = None, *,
                 by: GroupBy | None = None) -> list[FindingRow]:
        check_group(by)
        g = f"COALESCE(a.{_GROUP_COLUMNS[by]}, '-')" if by is not None else "''"
        where, params = self._range(since, until)
        where = [w.replace("ts_us", "a.ts_us") for w in where]
        sql = f"""SELECT {g} AS g, j.key, SUM(j.value), COUNT(*)
                  FROM audit_events AS a, json_each(a.finding_counts) AS j
                  WHERE {' AND '.join(where)} AND a.finding_counts != '{{}}'
                  GROUP BY g, j.key ORDER BY SUM(j.value) DESC, g, j.key"""
        with self._db.lock:
            rows = self._db.conn.execute(sql, params).fetchall()
        return [FindingRow(group=str(r[0]), type=str(r[1]), count=int(r[2]), events=int(r[3])) for r in rows]

    def fingerprints(self, since: datetime, until: datetime | None = None, *,
                     limit: int = 50) -> list[FingerprintRow]:
        where, params = self._range(since, until)
        where = [w.replace("ts_us", "a.ts_us") for w in where]
        sql = f"""SELECT j.value, COALESCE(a.team, '-'), COALESCE(a.key_id, '-'), COUNT(*), MIN(a.ts_us),
                         MAX(a.ts_us)
                  FROM audit_events AS a, json_each(a.fingerprints) AS j
                  WHERE {' AND '.join(where)} AND a.fingerprints != '[]'
                  GROUP BY j.value, a.team, a.key_id"""
        with self._db.lock:
            rows = self._db.conn.execute(sql, params).fetchall()
        acc: dict[str, list[Any]] = {}
        for fp, team, key, n, first, last in rows:
            a = acc.setdefault(fp, [0, first, last, set(), set()])
            a[0] += n
            a[1], a[2] = min(a[1], first), max(a[2], last)
            a[3].add(team)
            a[4].add(key)
        out = [FingerprintRow(fingerprint=fp, events=a[0], first_seen=from_us(a[1]), last_seen=from_us(a[2]),
                              teams=sorted(a[3]), keys=sorted(a[4])) for fp, a in acc.items()]
        out.sort(key=lambda r: (-r.events, r.fingerprint))
        return out[:max(0, int(limit))]

    def spend(self, since: datetime, *, key_id: str | None = None, team: str | None = None) -> float:
        where, params = self._range(since, None, key_id=key_id, team=team)
        with self._db.lock:
            row = self._db.conn.execute(
                f"SELECT COALESCE(SUM(cost_usd), 0) FROM audit_events WHERE {' AND '.join(where)}", params
            ).fetchone()
        return float(row[0])

    def purge(self, before: datetime) -> int:
        """Deletes in chunks so a big purge does not hold the write lock against the gateway for long."""
        cutoff = to_us(before)
        total = 0
        while True:
            with self._db.lock:
                cur = self._db.conn.execute(
                    "DELETE FROM audit_events WHERE id IN "
                    "(SELECT id FROM audit_events WHERE ts_us < ? LIMIT ?)", (cutoff, PURGE_CHUNK))
                n = cur.rowcount
            total += n
            if n < PURGE_CHUNK:
                return total

    def vacuum(self) -> None:
        """Give the space of purged events back to the file system (rewrites the file; takes a while)."""
        with self._db.lock:
            self._db.conn.execute("VACUUM")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteAuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _range(since: datetime | None, until: datetime | None, **equal: str | None) -> tuple[list[str], list[Any]]:
        """Conditions on the time range, and ``column = value`` for each ``equal`` value given."""
        where, params = ["1 = 1"], []  # type: list[str], list[Any]
        if since is not None:
            where.append("ts_us >= ?")
            params.append(to_us(since))
        if until is not None:
            where.append("ts_us < ?")
            params.append(to_us(until))
        for col, value in equal.items():
            if value is not None:
                where.append(f"{col} = ?")
                params.append(value)
        return where, params


def hash_secret(secret: str) -> str:
    """SHA-256 of the secret. Secrets carry 240 random bits, so a fast unsalted hash is not brute-forceable;
    a slow KDF would only cost latency on every request."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    body = secrets.token_urlsafe(30)  # 30 bytes -> exactly 40 url-safe characters
    assert len(body) == SECRET_BODY_LEN
    return SECRET_PREFIX + body


def looks_like_secret(value: str) -> bool:
    return bool(_SECRET_RE.match(value))


_KEY_COLUMNS = "key_id, team, user, name, created_us, revoked_us, admin, budget_usd, rpm, models"


def _key_from_row(r: Sequence[Any]) -> KeyRecord:
    return KeyRecord(
        key_id=r[0], team=r[1], user=r[2], name=r[3], created=from_us(r[4]),
        revoked=None if r[5] is None else from_us(r[5]), admin=bool(r[6]), budget_usd=r[7], rpm=r[8],
        models=None if r[9] is None else list(json.loads(r[9])),
    )


class SqliteKeyStore:
    """The default :class:`~redline.store.base.KeyStore`: only SHA-256 hashes of secrets are stored."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = _Db(path, "keys", _KEY_SCHEMA)
        self.path = self._db.path

    def create(self, team: str, *, user: str | None = None, name: str | None = None, admin: bool = False,
               budget_usd: float | None = None, rpm: int | None = None,
               models: list[str] | None = None) -> tuple[KeyRecord, str]:
        if not team or not team.strip():
            raise ValueError("a key needs a team")
        if budget_usd is not None and budget_usd < 0:
            raise ValueError("budget must not be negative")
        if rpm is not None and rpm < 1:
            raise ValueError("rpm must be at least 1")
        now = datetime.now(UTC)
        for _ in range(5):  # a key id collision (48 random bits) is astronomically rare; retry anyway
            key_id = KEY_ID_PREFIX + secrets.token_hex(6)
            secret = new_secret()
            try:
                with self._db.lock:
                    self._db.conn.execute(
                        "INSERT INTO api_keys (key_id, secret_hash, hash_scheme, team, user, name, created_us, "
                        "admin, budget_usd, rpm, models) VALUES (?, ?, 'sha256', ?, ?, ?, ?, ?, ?, ?, ?)",
                        (key_id, hash_secret(secret), team, user, name, to_us(now), int(admin), budget_usd, rpm,
                         None if models is None else json.dumps(list(models))))
            except sqlite3.IntegrityError:
                continue
            rec = KeyRecord(key_id=key_id, team=team, user=user, name=name, created=from_us(to_us(now)),
                            admin=admin, budget_usd=budget_usd, rpm=rpm,
                            models=None if models is None else list(models))
            return rec, secret
        raise RuntimeError("could not allocate a key id")

    def authenticate(self, secret: str) -> KeyRecord | None:
        if not isinstance(secret, str) or not looks_like_secret(secret):
            return None
        digest = hash_secret(secret)
        with self._db.lock:
            row = self._db.conn.execute(
                f"SELECT {_KEY_COLUMNS}, secret_hash FROM api_keys WHERE secret_hash = ?", (digest,)).fetchone()
        if row is None:
            # Same work on the miss path as on the hit path.
            hmac.compare_digest(digest, "0" * len(digest))
            return None
        if not hmac.compare_digest(str(row[10]), digest):
            return None
        rec = _key_from_row(row)
        return None if rec.revoked is not None else rec

    def revoke(self, key_id: str) -> bool:
        with self._db.lock:
            cur = self._db.conn.execute("UPDATE api_keys SET revoked_us = ? WHERE key_id = ? AND revoked_us IS NULL",
                                        (to_us(datetime.now(UTC)), key_id))
        return cur.rowcount > 0

    def get(self, key_id: str) -> KeyRecord | None:
        with self._db.lock:
            row = self._db.conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ?",
                                        (key_id,)).fetchone()
        return None if row is None else _key_from_row(row)

    def list(self) -> list[KeyRecord]:
        with self._db.lock:
            rows = self._db.conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_us, key_id").fetchall()
        return [_key_from_row(r) for r in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteKeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
