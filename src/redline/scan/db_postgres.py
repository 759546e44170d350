"""PostgreSQL backend (psycopg 3): read-only transactions, ``TABLESAMPLE`` sampling, server-side cursors.

Without a database in the URL every database that accepts connections is scanned (one connection each).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from redline.scan.db import Column, DbError, DbUrl, Read, Table, missing_driver, scrub

TEXT_TYPES = {"text", "varchar", "bpchar", "json", "jsonb", "citext", "name", "xml"}
CAST_TO_TEXT = {"json", "jsonb", "xml"}
SKIP_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
BIG_TABLE = 5_000_000  # above this, page-level SYSTEM sampling instead of row-level BERNOULLI


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(line.strip() for line in text if line.strip()) or type(exc).__name__


class PostgresBackend:
    read_only = "yes (read-only transactions: default_transaction_read_only=on, BEGIN READ ONLY)"

    def __init__(self, u: DbUrl, timeout: float = 10) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise missing_driver("psycopg[binary]", "PostgreSQL") from None
        self.u = u
        self.timeout = timeout
        self.conn: Any = None
        self.conn = self._connect(u.database or "postgres")

    def _connect(self, dbname: str) -> Any:
        import psycopg

        u = self.u
        params: dict[str, Any] = {k: v for k, v in u.params.items() if k not in ("password", "options")}
        try:
            conn = psycopg.connect(
                host=u.host, port=u.port or 5432, user=u.user, password=u.password, dbname=dbname,
                connect_timeout=int(self.timeout), application_name="redline",
                options="-c default_transaction_read_only=on -c statement_timeout=0", **params)
            conn.read_only = True
            conn.execute("SELECT 1")
            conn.rollback()
        except psycopg.Error as exc:
            raise DbError(f"{u.display}: cannot connect to PostgreSQL: {scrub(_message(exc), u.password)}") from None
        return conn

    def _databases(self) -> list[str]:
        if self.u.database:
            return [self.u.database]
        rows = self.conn.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                                 "ORDER BY datname").fetchall()
        self.conn.rollback()
        return [r[0] for r in rows]

    def tables(self) -> Iterator[Table]:
        import psycopg

        first = self.conn
        for db in self._databases():
            if db != (self.u.database or "postgres"):
                try:
                    self.conn = self._connect(db)
                except DbError:
                    continue  # e.g. no CONNECT privilege on that database
            try:
                yield from self._tables(db)
            except psycopg.Error as exc:
                raise DbError(f"{db}: cannot list tables: {_message(exc)}") from None
            finally:
                if self.conn is not first:
                    self.conn.close()
                    self.conn = first

    def _tables(self, db: str) -> Iterator[Table]:
        rows = self.conn.execute(
            """
            SELECT n.nspname, c.relname, c.reltuples::float8, a.attname, t.typname, et.typname,
                   format_type(a.atttypid, a.atttypmod),
                   (SELECT array_agg(ka.attname ORDER BY ka.attnum) FROM pg_index i
                      JOIN pg_attribute ka ON ka.attrelid = i.indrelid AND ka.attnum = ANY(i.indkey)
                     WHERE i.indrelid = c.oid AND i.indisprimary)
              FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              JOIN pg_type t ON t.oid = a.atttypid
              LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
             WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
               AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg_temp%%'
               AND has_table_privilege(c.oid, 'SELECT')
             ORDER BY n.nspname, c.relname, a.attnum
            """, (list(SKIP_SCHEMAS),)).fetchall()
        self.conn.rollback()
        tables: dict[tuple[str, str], Table] = {}
        for schema, name, reltuples, col, typ, elem, fmt, pk in rows:
            t = tables.get((schema, name))
            if t is None:
                t = tables[(schema, name)] = Table(db, name, [], schema=schema,
                                                   extra={"reltuples": reltuples, "pk": pk or []})
            if typ in TEXT_TYPES or (elem or "") in TEXT_TYPES:
                t.columns.append(Column(col, fmt))
                t.extra.setdefault("cast", {})[col] = typ in CAST_TO_TEXT
        yield from tables.values()

    def read(self, table: Table, sample: int | None, batch_size: int) -> Read:
        import psycopg
        from psycopg import sql

        rel = sql.Identifier(table.schema or "public", table.name)
        pk: list[str] = table.extra.get("pk", [])
        key: sql.Composable = (sql.SQL("{}::text").format(sql.Identifier(pk[0])) if len(pk) == 1
                               else sql.SQL("ctid::text"))
        casts: dict[str, bool] = table.extra.get("cast", {})
        clause: sql.Composable
        cols = sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(c.name)) if casts.get(c.name) else sql.Identifier(c.name)
            for c in table.columns)
        try:
            if sample is None:
                method, planned, clause = "full", int(max(table.extra.get("reltuples", 0), 0)) or None, sql.SQL("")
            else:
                small = self.conn.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT %s) s").format(rel),
                                          (sample + 1,)).fetchone()[0]
                if small <= sample:
                    method, planned, clause = f"all {small} rows", small, sql.SQL("")
                else:
                    est = float(table.extra.get("reltuples") or 0)
                    if est <= sample:  # never analysed, or stale statistics
                        est = float(self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(rel)).fetchone()[0])
                    pct = min(100.0, 100.0 * sample * 1.5 / max(est, 1.0))
                    how = "SYSTEM" if est > BIG_TABLE else "BERNOULLI"
                    clause = sql.SQL(" TABLESAMPLE {} ({})").format(sql.SQL(how), sql.Literal(round(pct, 6)))
                    method, planned = f"TABLESAMPLE {how} ({pct:.4g}%) LIMIT {sample} of ~{int(est)} rows", sample
            self.conn.rollback()
            query: sql.Composable = sql.SQL("SELECT {}, {} FROM {}{}").format(key, cols, rel, clause)
            if sample is not None:
                query = sql.SQL("{} LIMIT {}").format(query, sql.Literal(sample))
        except psycopg.Error as exc:
            self.conn.rollback()
            raise DbError(f"cannot read: {_message(exc)}") from None
        return Read(method, self._batches(query, batch_size), planned)

    def _batches(self, query: Any, batch_size: int) -> Iterator[list[tuple[Any, ...]]]:
        import psycopg

        try:
            with self.conn.cursor(name="redline_scan") as cur:
                cur.itersize = batch_size
                cur.execute(query)
                while True:
                    rows = cur.fetchmany(batch_size)
                    if not rows:
                        break
                    yield rows
        except psycopg.Error as exc:
            raise DbError(f"cannot read: {_message(exc)}") from None
        finally:
            if not self.conn.closed and self.conn.info.transaction_status != 0:
                self.conn.rollback()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
