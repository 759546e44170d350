"""Scanning database tables: SQLite, PostgreSQL and ClickHouse.

``redline scan <URL>`` connects read-only, enumerates databases, tables and text-like columns, reads a sample of
rows per table with the database's native method (or every row with ``--full``) in batches, and runs the engine
over each column's cells. Findings become records located by ``table``, ``column`` and ``row`` (a key, or an
offset when the table has none); ``start``/``end`` are offsets within the cell's text. Column names that suggest
secrets or personal data (``password``, ``api_key``, ``email``) raise a low-confidence ``column-name-hint``.

Drivers are imported lazily by the backend modules (``db_sqlite``, ``db_postgres``, ``db_clickhouse``), so file
scanning works without them and a missing driver gives a clear error.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import sys
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from redline.engine import Scanner
from redline.scan.files import FileResult

DEFAULT_SAMPLE = 1000
DEFAULT_BATCH = 5000
PASSWORD_ENV = "REDLINE_DB_PASSWORD"
# Cells of one column are joined and scanned in one engine call; a blank line keeps matches inside a cell.
CELL_SEP = "\n\n"
SCAN_CHARS = 1 << 22
EXAMPLES = 3

Emit = Callable[[dict[str, Any]], None]


class DbError(Exception):
    """A connection or query problem; the message is safe to print (no password)."""


# -- URLs and passwords ---------------------------------------------------------------------------------

@dataclass
class DbUrl:
    scheme: str  # sqlite | postgresql | clickhouse
    host: str = ""
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    path: str = ""  # sqlite file
    params: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    @property
    def display(self) -> str:
        return redact_url(self.raw)


_PW_IN_URL = re.compile(r"^([a-zA-Z][\w+.-]*://[^:/@?#]*):([^@/?#]*)@")


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    return _PW_IN_URL.sub(r"\1:***@", url)


def scrub(message: str, *secrets: str | None) -> str:
    for s in secrets:
        if s:
            message = message.replace(s, "***")
    return message


def parse_url(url: str) -> DbUrl:
    m = re.match(r"^([a-zA-Z][\w.-]*)(?:\+[\w.-]+)?://", url)
    if not m:
        raise DbError(f"{redact_url(url)}: not a database URL")
    scheme = m.group(1).lower()
    if scheme == "postgres":
        scheme = "postgresql"
    if scheme not in ("sqlite", "postgresql", "clickhouse"):
        raise DbError(f"{redact_url(url)}: unsupported database {scheme!r} (use sqlite, postgresql or clickhouse)")
    if scheme == "sqlite":
        rest = url[m.end():]
        path = unquote(rest.split("?", 1)[0])
        if path.startswith("/"):
            path = path[1:]  # sqlite:///rel.db is relative, sqlite:////abs.db absolute (as SQLAlchemy)
            if not os.path.exists(path) and os.path.exists("/" + path):
                path = "/" + path  # sqlite:///tmp/x.db meaning /tmp/x.db
        if not path:
            raise DbError(f"{url}: no database file (use sqlite:///path/to/file.db)")
        return DbUrl("sqlite", path=path, raw=url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DbError(f"{redact_url(url)}: bad URL: {scrub(str(exc), _url_password(url))}") from None
    if not parts.hostname:
        raise DbError(f"{redact_url(url)}: no host in URL")
    db = unquote(parts.path.lstrip("/")) or None
    if db and "/" in db:
        raise DbError(f"{redact_url(url)}: bad database name {db!r}")
    return DbUrl(scheme, host=parts.hostname, port=port,
                  user=unquote(parts.username) if parts.username else None,
                  password=unquote(parts.password) if parts.password is not None else None,
                  database=db, params=dict(parse_qsl(parts.query)), raw=url)


def _url_password(url: str) -> str | None:
    m = _PW_IN_URL.match(url)
    return unquote(m.group(2)) if m else None


def resolve_password(u: DbUrl, password_env: str | None) -> None:
    """``--password-env VAR`` wins, then the URL's password, then $REDLINE_DB_PASSWORD."""
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise DbError(f"--password-env {password_env}: the environment variable is not set")
        u.password = value
    elif u.password is None and os.environ.get(PASSWORD_ENV):
        u.password = os.environ[PASSWORD_ENV]


# -- what backends provide ------------------------------------------------------------------------------

@dataclass
class Column:
    name: str
    type: str


@dataclass
class Table:
    database: str
    name: str
    columns: list[Column]
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        parts = [self.database, *([self.schema] if self.schema and self.schema != "public" else []), self.name]
        return ".".join(parts)


@dataclass
class Read:
    """How a table is read and its batches: each row is ``(key, cell, cell, ...)`` in column order."""

    method: str
    batches: Iterator[list[tuple[Any, ...]]]
    planned: int | None = None  # rows expected, for progress


class Backend(Protocol):
    read_only: str  # how the connection is made read-only, for the report

    def tables(self) -> Iterator[Table]: ...

    def read(self, table: Table, sample: int | None, batch_size: int) -> Read: ...

    def close(self) -> None: ...


def connect(u: DbUrl, timeout: float = 10) -> Backend:
    if u.scheme == "sqlite":
        from redline.scan.db_sqlite import SqliteBackend

        return SqliteBackend(u)
    if u.scheme == "postgresql":
        from redline.scan.db_postgres import PostgresBackend

        return PostgresBackend(u, timeout)
    from redline.scan.db_clickhouse import ClickHouseBackend

    return ClickHouseBackend(u, timeout)


def missing_driver(package: str, scheme: str) -> DbError:
    return DbError(f"scanning {scheme} needs the Python package {package}: pip install '{package}'")


# -- cells to text --------------------------------------------------------------------------------------

def cell_text(value: Any) -> str | None:
    """Text of one cell: strings as they are, arrays one element a line, maps and JSON as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).rstrip(b"\x00").decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        parts = [t for t in (cell_text(v) for v in value) if t]
        return "\n".join(parts)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


# -- column-name hints ----------------------------------------------------------------------------------

_SECRET_TOKENS = {"password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "tokens", "credential",
                  "credentials", "apikey", "privkey", "authorization"}
_SECRET_SUBSTR = ("password", "apikey", "accesskey", "privatekey", "secretkey", "clientsecret", "accesstoken",
                  "refreshtoken", "authtoken", "bearertoken", "connectionstring")
_PII_TOKENS = {"email", "mail", "phone", "mobile", "ssn", "passport", "iban", "dob", "birthday", "birthdate",
               "surname", "firstname", "lastname", "fullname"}
_PII_SUBSTR = ("email", "phonenumber", "creditcard", "cardnumber", "dateofbirth", "birthdate", "socialsecurity",
               "passport", "nationalid", "taxid", "homeaddress", "streetaddress")


def name_hint(column: str) -> tuple[str, str] | None:
    """``(kind, word)`` when a column's name suggests secrets or personal data."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", column).lower()
    tokens = re.findall(r"[a-z]+", spaced)
    flat = "".join(tokens)
    for t in tokens:
        if t in _SECRET_TOKENS:
            return "secret", t
    for s in _SECRET_SUBSTR:
        if s in flat:
            return "secret", s
    for t in tokens:
        if t in _PII_TOKENS:
            return "pii", t
    for s in _PII_SUBSTR:
        if s in flat:
            return "pii", s
    return None


# -- per-column results ---------------------------------------------------------------------------------

@dataclass
class ColumnStats:
    name: str
    type: str
    hint: tuple[str, str] | None = None
    cells: int = 0
    chars: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.name,
            "type": self.type,
            "cells": self.cells,
            "chars": self.chars,
            "findings": sum(self.by_kind.values()),
            "by_kind": dict(self.by_kind),
            "by_type": dict(self.by_type.most_common()),
            "chat": self.by_kind.get("chat", 0) > 0,
            "name_hint": f"{self.hint[0]}: {self.hint[1]}" if self.hint else None,
            "examples": self.examples,
        }


@dataclass
class TableStats:
    table: str
    method: str = ""
    rows: int = 0
    columns: list[ColumnStats] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "method": self.method, "rows": self.rows,
                "columns": [c.to_dict() for c in self.columns], **({"error": self.error} if self.error else {})}


@dataclass
class DbResult(FileResult):
    """A database scan: ``summary`` holds per-table/column results (counts, rows, chat yes/no, read-only)."""

    summary: dict[str, Any] = field(default_factory=dict)


# -- scanning -------------------------------------------------------------------------------------------

class _ColumnScan:
    """Joins one column's cells of a batch, scans them in one engine call and maps findings back to cells."""

    def __init__(self, scanner: Scanner, table: str, stats: ColumnStats, emit: Emit, reveal: bool) -> None:
        self.scanner = scanner
        self.table = table
        self.stats = stats
        self.emit = emit
        self.reveal = reveal
        self.keys: list[Any] = []
        self.texts: list[str] = []
        self.size = 0

    def add(self, key: Any, text: str) -> None:
        self.keys.append(key)
        self.texts.append(text)
        self.size += len(text) + len(CELL_SEP)
        self.stats.cells += 1
        self.stats.chars += len(text)
        if self.size >= SCAN_CHARS:
            self.flush()

    def flush(self) -> None:
        if not self.texts:
            return
        texts, keys = self.texts, self.keys
        self.texts, self.keys, self.size = [], [], 0
        joined = CELL_SEP.join(texts)
        findings = self.scanner.scan_text(joined)
        if not findings:
            return
        starts: list[int] = []
        pos = 0
        for t in texts:
            starts.append(pos)
            pos += len(t) + len(CELL_SEP)
        st = self.stats
        for f in findings:
            i = bisect_right(starts, f.start) - 1
            base = starts[i]
            start = f.start - base
            if start >= len(texts[i]):
                continue  # inside a separator
            end = min(f.end - base, len(texts[i]))
            rec: dict[str, Any] = {
                "table": self.table, "column": st.name, "row": keys[i], "start": start, "end": end,
                "kind": f.kind, "type": f.type, "confidence": f.confidence, "fingerprint": f.fingerprint,
                "snippet": f.snippet,
            }
            if self.reveal:
                rec["value"] = texts[i][start:end]
            st.by_kind[f.kind] += 1
            st.by_type[f.type] += 1
            if len(st.examples) < EXAMPLES and all(e["type"] != f.type for e in st.examples):
                st.examples.append({"type": f.type, "fingerprint": f.fingerprint, "snippet": f.snippet})
            self.emit(rec)


def _selected(table: Table, include: Sequence[str], exclude: Sequence[str]) -> bool:
    names = (table.full_name, table.name, f"{table.database}.{table.name}")

    def match(pats: Sequence[str]) -> bool:
        return any(fnmatch.fnmatchcase(n, p) for p in pats for n in names)

    return (not include or match(include)) and not match(exclude)


def scan_backend(
    backend: Backend,
    scanner: Scanner,
    emit: Emit,
    *,
    sample: int | None = DEFAULT_SAMPLE,
    batch_size: int = DEFAULT_BATCH,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    reveal: bool = False,
    on_rows: Callable[[int], None] | None = None,
    on_table: Callable[[Table, Read], None] | None = None,
) -> tuple[list[TableStats], int, list[str]]:
    """Scan every selected table; returns per-table stats, characters scanned and error messages."""
    tables: list[TableStats] = []
    errors: list[str] = []
    chars = 0
    for table in backend.tables():
        if not table.columns or not _selected(table, include, exclude):
            continue
        ts = TableStats(table.full_name)
        tables.append(ts)
        for col in table.columns:
            cs = ColumnStats(col.name, col.type, name_hint(col.name))
            ts.columns.append(cs)
            if cs.hint:
                kind, word = cs.hint
                emit({"table": ts.table, "column": col.name, "kind": kind, "type": "column-name-hint",
                      "confidence": "low", "fingerprint": scanner.fingerprint(f"column:{ts.table}.{col.name}"),
                      "snippet": f"column name suggests {'secrets' if kind == 'secret' else 'personal data'}"
                                 f" ({word})", "hint": word})
        scans = [_ColumnScan(scanner, ts.table, cs, emit, reveal) for cs in ts.columns]
        try:
            read = backend.read(table, sample, batch_size)
            ts.method = read.method
            if on_table:
                on_table(table, read)
            for batch in read.batches:
                for row in batch:
                    key = row[0]
                    for j, value in enumerate(row[1:]):
                        text = cell_text(value)
                        if text:
                            scans[j].add(key, text)
                ts.rows += len(batch)
                for sc in scans:
                    sc.flush()
                if on_rows:
                    on_rows(len(batch))
        except DbError as exc:
            ts.error = str(exc)
            errors.append(f"{ts.table}: {exc}")
        for sc in scans:
            sc.flush()
        chars += sum(cs.chars for cs in ts.columns)
    return tables, chars, errors


# -- the command line -----------------------------------------------------------------------------------

def add_scan_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("databases (sqlite:///file.db, postgresql://user@host:port/db, "
                                  "clickhouse://user@host:port/db)")
    g.add_argument("--tables", action="append", metavar="GLOB",
                   help="only tables matching (db.table or table; repeatable)")
    g.add_argument("--exclude-tables", action="append", metavar="GLOB", help="skip matching tables (repeatable)")
    g.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, metavar="N",
                   help=f"rows sampled per table with the database's native method (default {DEFAULT_SAMPLE:,})")
    g.add_argument("--full", action="store_true", help="read every row instead of a sample (streamed)")
    g.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N",
                   help=f"rows fetched per batch (default {DEFAULT_BATCH:,})")
    g.add_argument("--password-env", metavar="VAR",
                   help=f"read the database password from this environment variable (default: ${PASSWORD_ENV} "
                        "when the URL has none)")
    g.add_argument("--db-summary", metavar="FILE", help="write the per-table/column summary as JSON to FILE")


def _opt(args: argparse.Namespace, name: str, default: Any) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


def scan_database(url: str, scanner: Scanner, args: argparse.Namespace, emit: Emit) -> DbResult:
    """Scan a database URL; records go to ``emit``; errors come back in ``result.error`` (password-free)."""
    result = DbResult(redact_url(url))
    started = time.perf_counter()
    secret: str | None = _url_password(url)
    try:
        u = parse_url(url)
        resolve_password(u, getattr(args, "password_env", None))
        secret = u.password
        sample = None if getattr(args, "full", False) else int(_opt(args, "sample", DEFAULT_SAMPLE))
        batch = int(_opt(args, "batch_size", DEFAULT_BATCH))
        if sample is not None and sample < 1:
            raise DbError("--sample must be at least 1 (or use --full)")
        if batch < 1:
            raise DbError("--batch-size must be at least 1")
        backend = connect(u)
    except DbError as exc:
        result.error = scrub(str(exc), secret)
        return result
    progress = _DbProgress() if not getattr(args, "no_progress", False) and sys.stderr.isatty() else None
    try:
        tables, chars, errors = scan_backend(
            backend, scanner, emit, sample=sample, batch_size=batch,
            include=_opt(args, "tables", []), exclude=_opt(args, "exclude_tables", []),
            reveal=bool(getattr(args, "reveal", False)),
            on_rows=progress.advance if progress else None, on_table=progress.table if progress else None)
    except DbError as exc:
        result.error = scrub(f"{u.display}: {exc}", secret)
        return result
    finally:
        if progress:
            progress.stop()
        backend.close()
    seconds = time.perf_counter() - started
    rows = sum(t.rows for t in tables)
    result.chars = result.bytes_read = chars
    result.summary = {
        "source": u.display, "database": u.scheme, "read_only": backend.read_only,
        "mode": "full" if sample is None else f"sample {sample} rows per table",
        "tables_scanned": len(tables), "rows": rows, "seconds": round(seconds, 3),
        "rows_per_second": round(rows / seconds) if seconds > 0 else None,
        "tables": [t.to_dict() for t in tables],
    }
    if errors:
        result.error = scrub("; ".join(errors), secret)
    _report_summary(result.summary, args)
    return result


def _report_summary(summary: dict[str, Any], args: argparse.Namespace) -> None:
    path = getattr(args, "db_summary", None)
    if path:
        try:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(summary, fh, ensure_ascii=False, indent=2)
                fh.write("\n")
        except OSError as exc:
            print(f"redline: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
    if getattr(args, "format", "table") != "table":
        # The table format prints the summary itself (report.Writer); the others carry it in their data
        # (json) or say it in one line here, beside the scan's summary line.
        print_summary(summary, sys.stderr, table=False)


def summary_text(summary: dict[str, Any]) -> str:
    return (f"{summary['source']}: {summary['tables_scanned']} table(s), {summary['rows']:,} row(s) "
            f"({summary['mode']}), {summary['seconds']:.2f} s; connection read-only: {summary['read_only']}")


def print_summary(summary: dict[str, Any], out: Any, *, table: bool = True) -> None:
    """Per-table/column summary: a table of columns with findings or name hints, then one line."""
    if not table:
        print(f"redline: {summary_text(summary)}", file=out)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table as RichTable

    console = Console(file=out, soft_wrap=False, width=None if out.isatty() else 160)
    t = RichTable(header_style="bold", title="database columns with findings")
    for col in ("table", "column", "rows", "findings", "types", "chat", "examples"):
        t.add_column(col, overflow="fold")
    shown = 0
    for tab in summary["tables"]:
        for c in tab["columns"]:
            if not c["findings"] and not c["name_hint"]:
                continue
            types = ", ".join(f"{k} {v}" for k, v in c["by_type"].items())
            if c["name_hint"]:
                types = (types + "; " if types else "") + f"name hint ({c['name_hint']})"
            ex = "; ".join(f"{e['snippet']} {e['fingerprint'][:12]}" for e in c["examples"])
            t.add_row(escape(tab["table"]), escape(c["column"]), f"{tab['rows']:,}", str(c["findings"]),
                      escape(types), "yes" if c["chat"] else "no", escape(ex))
            shown += 1
    if shown:
        console.print(t)
    console.print(escape(summary_text(summary)))


class _DbProgress:
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("rows"), TimeRemainingColumn(), transient=True,
                                 console=Console(file=sys.stderr))
        self.task = self.progress.add_task("scanning", total=None)
        self.progress.start()

    def table(self, table: Table, read: Read) -> None:
        self.progress.reset(self.task, total=read.planned, description=table.full_name)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def stop(self) -> None:
        self.progress.stop()
