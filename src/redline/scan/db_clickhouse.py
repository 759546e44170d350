"""ClickHouse backend (native protocol via clickhouse-driver): ``readonly=1``, ``SAMPLE`` or random-offset
``LIMIT`` sampling, streamed blocks (``execute_iter``). Works with 18.16 (Debian) and current servers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

from redline.scan.db import Column, DbError, DbUrl, Read, Table, missing_driver, scrub

SKIP_DATABASES = ("system", "INFORMATION_SCHEMA", "information_schema")
READABLE_ENGINES = ("Log", "TinyLog", "StripeLog", "Memory")
KEY_COLUMNS = 3


def _q(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _unwrap(t: str) -> str:
    t = t.strip()
    changed = True
    while changed:
        changed = False
        for w in ("Nullable(", "LowCardinality("):
            if t.startswith(w) and t.endswith(")"):
                t, changed = t[len(w):-1].strip(), True
    return t


def _split_args(inner: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def text_like(type_: str) -> bool:
    """String, FixedString, Nullable/LowCardinality of them, JSON/Object, Array and Map holding text."""
    t = _unwrap(type_)
    if t == "String" or t.startswith("FixedString(") or t in ("JSON", "Object('json')") or t.startswith("JSON("):
        return True
    if t.startswith("Array(") and t.endswith(")"):
        return text_like(t[6:-1])
    if t.startswith("Map(") and t.endswith(")"):
        return any(text_like(a) for a in _split_args(t[4:-1]))
    return False


def _message(exc: BaseException) -> str:
    text = str(exc)
    text = text.split("Stack trace:", 1)[0]
    text = re.sub(r"^Code: \d+\.\s*", "", text.strip())
    text = text.replace("DB::Exception: ", "")
    return " ".join(text.split()).rstrip(".") or type(exc).__name__


class ClickHouseBackend:
    read_only = "yes (readonly=1)"

    def __init__(self, u: DbUrl, timeout: float = 10) -> None:
        try:
            from clickhouse_driver import Client  # type: ignore[import-untyped]
        except ImportError:
            raise missing_driver("clickhouse-driver", "ClickHouse") from None
        self.u = u
        secure = u.params.get("secure", "").lower() in ("1", "true", "yes")
        kwargs: dict[str, Any] = dict(
            host=u.host, port=u.port or (9440 if secure else 9000), user=u.user or "default",
            password=u.password or "", database=u.database or "default", connect_timeout=timeout,
            send_receive_timeout=max(timeout, 300), client_name="redline", secure=secure,
            settings={"readonly": 1})
        try:
            self.client = Client(**kwargs)
            self.version = self.client.execute("SELECT version()")[0][0]
        except Exception as exc:
            msg = _message(exc)
            if "readonly" in msg.lower() and "setting" in msg.lower():
                # The user's profile is already read-only and may not even re-assert readonly=1.
                kwargs["settings"] = {}
                try:
                    self.client = Client(**kwargs)
                    self.version = self.client.execute("SELECT version()")[0][0]
                    self.read_only = "yes (user profile is read-only)"
                except Exception as exc2:
                    raise self._conn_error(exc2) from None
            else:
                raise self._conn_error(exc) from None

    def _conn_error(self, exc: BaseException) -> DbError:
        u = self.u
        msg = scrub(_message(exc), u.password)
        return DbError(f"{u.display}: cannot connect to ClickHouse at {u.host}:{u.port or 9000}: {msg}")

    def _execute(self, query: str, params: Any = None) -> list[Any]:
        try:
            rows: list[Any] = self.client.execute(query, params)
            return rows
        except Exception as exc:
            raise DbError(scrub(_message(exc), self.u.password)) from None

    def tables(self) -> Iterator[Table]:
        if self.u.database:
            dbs = [self.u.database]
        else:
            dbs = [r[0] for r in self._execute("SELECT name FROM system.databases ORDER BY name")
                   if r[0] not in SKIP_DATABASES]
        has = {r[0] for r in self._execute("SELECT name FROM system.columns WHERE database = 'system' "
                                           "AND table = 'tables'")}
        extra = ", ".join(c if c in has else "''" for c in ("sampling_key", "primary_key"))
        tables = self._execute(f"SELECT database, name, engine, {extra} FROM system.tables "
                               "WHERE database IN %(dbs)s ORDER BY database, name", {"dbs": tuple(dbs)})
        cols: dict[tuple[str, str], list[Column]] = {}
        for db, table, name, type_ in self._execute(
                "SELECT database, table, name, type FROM system.columns WHERE database IN %(dbs)s",
                {"dbs": tuple(dbs)}):
            cols.setdefault((db, table), []).append(Column(name, type_))
        for db, name, engine, sampling_key, primary_key in tables:
            if not (engine.endswith("MergeTree") or engine in READABLE_ENGINES):
                continue  # views, dictionaries, Distributed, Kafka, URL, ...: not stored here, or not safe
            all_cols = cols.get((db, name), [])
            names = {c.name for c in all_cols}
            keys = [k.strip() for k in (primary_key or "").split(",") if k.strip() in names][:KEY_COLUMNS]
            yield Table(db, name, [c for c in all_cols if text_like(c.type)],
                        extra={"engine": engine, "sampling_key": sampling_key, "keys": keys})

    def read(self, table: Table, sample: int | None, batch_size: int) -> Read:
        rel = f"{_q(table.database)}.{_q(table.name)}"
        keys: list[str] = table.extra.get("keys", [])
        cols = ", ".join([*(_q(k) for k in keys), *(_q(c.name) for c in table.columns)])
        count = int(self._execute(f"SELECT count() FROM {rel}")[0][0])
        offset = 0
        if sample is None:
            query, method, planned = f"SELECT {cols} FROM {rel}", "full", count
        elif count <= sample:
            query, method, planned = f"SELECT {cols} FROM {rel}", f"all {count} rows", count
        elif table.extra.get("sampling_key"):
            frac = min(1.0, sample * 1.5 / count)
            query = f"SELECT {cols} FROM {rel} SAMPLE {frac:.8f} LIMIT {int(sample)}"
            method, planned = f"SAMPLE {frac:.4g} LIMIT {sample} of {count} rows", sample
        else:
            offset = random.randrange(0, count - sample + 1)
            query = f"SELECT {cols} FROM {rel} LIMIT {offset}, {int(sample)}"
            method, planned = f"LIMIT {sample} at random offset {offset} of {count} rows", sample
        return Read(method, self._batches(query, batch_size, keys, offset), planned)

    def _batches(self, query: str, batch_size: int, keys: list[str], offset: int) -> Iterator[list[tuple[Any, ...]]]:
        nk = len(keys)
        try:
            rows = self.client.execute_iter(query, settings={"max_block_size": batch_size})
            batch: list[tuple[Any, ...]] = []
            n = offset
            for row in rows:
                if nk:
                    key: Any = ",".join(f"{k}={row[i]}" for i, k in enumerate(keys))
                else:
                    key = n
                n += 1
                batch.append((key, *row[nk:]))
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch
        except DbError:
            raise
        except Exception as exc:
            raise DbError(f"cannot read: {scrub(_message(exc), self.u.password)}") from None

    def close(self) -> None:
        self.client.disconnect()
