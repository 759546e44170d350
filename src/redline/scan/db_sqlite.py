"""SQLite backend: opened read-only (``mode=ro`` and ``PRAGMA query_only``), sampled with ``ORDER BY random()``."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from redline.scan.db import Column, DbError, DbUrl, Read, Table

_TEXT_AFFINITY = ("CHAR", "CLOB", "TEXT", "JSON", "STRING")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def text_like(decl: str) -> bool:
    d = decl.upper()
    return not d or d == "ANY" or any(a in d for a in _TEXT_AFFINITY)


class SqliteBackend:
    read_only = "yes (file opened with mode=ro, PRAGMA query_only)"

    def __init__(self, u: DbUrl) -> None:
        self.path = u.path
        if not os.path.isfile(self.path):
            raise DbError(f"{u.display}: no such database file: {self.path}")
        self.name = Path(self.path).stem
        try:
            uri = "file:" + quote(os.path.abspath(self.path)) + "?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.conn.execute("PRAGMA query_only = ON")
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise DbError(f"{u.display}: cannot open: {exc}") from None

    def tables(self) -> Iterator[Table]:
        try:
            names = [r[0] for r in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        except sqlite3.Error as exc:
            raise DbError(f"cannot list tables: {exc}") from None
        for name in names:
            cols = [Column(r[1], r[2] or "") for r in self.conn.execute(f"PRAGMA table_info({_q(name)})")
                    if text_like(r[2] or "")]
            yield Table(self.name, name, cols)

    def read(self, table: Table, sample: int | None, batch_size: int) -> Read:
        cols = ", ".join(_q(c.name) for c in table.columns)
        t = _q(table.name)
        try:
            count = int(self.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
            has_rowid = True
            try:
                self.conn.execute(f"SELECT rowid FROM {t} LIMIT 0")
            except sqlite3.OperationalError:
                has_rowid = False  # WITHOUT ROWID table: rows are located by offset
        except sqlite3.Error as exc:
            raise DbError(f"cannot read: {exc}") from None
        key = "rowid" if has_rowid else "NULL"
        if sample is None or count <= sample:
            sql = f"SELECT {key}, {cols} FROM {t}"
            method, planned = ("full" if sample is None else f"all {count} rows"), count
        elif has_rowid:
            sql = (f"SELECT rowid, {cols} FROM {t} WHERE rowid IN "
                   f"(SELECT rowid FROM {t} ORDER BY random() LIMIT {int(sample)}) ORDER BY rowid")
            method, planned = f"random {sample} of {count} rows (ORDER BY random())", sample
        else:
            sql = f"SELECT NULL, {cols} FROM {t} ORDER BY random() LIMIT {int(sample)}"
            method, planned = f"random {sample} of {count} rows (ORDER BY random())", sample
        return Read(method, self._batches(sql, batch_size, has_rowid), planned)

    def _batches(self, sql: str, batch_size: int, has_rowid: bool) -> Iterator[list[tuple[Any, ...]]]:
        try:
            cur = self.conn.execute(sql)
            offset = 0
            while True:
                rows = cur.fetchmany(batch_size)
                if not rows:
                    return
                if not has_rowid:
                    rows = [(offset + i, *r[1:]) for i, r in enumerate(rows)]
                offset += len(rows)
                yield rows
        except sqlite3.Error as exc:
            raise DbError(f"cannot read: {exc}") from None

    def close(self) -> None:
        self.conn.close()
