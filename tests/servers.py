"""Throwaway database servers for tests and benchmarks: ClickHouse, PostgreSQL and Redis on 127.0.0.1.

Each server runs from a fresh temporary data directory on a random free port and is stopped afterwards. The
helpers (``start_clickhouse``, ``start_postgres``, ``start_redis``) are plain functions so benchmarks can use
them too; the pytest fixtures at the bottom wrap them (session-scoped, shared by all tests):

* ``clickhouse_server_factory(password="...")`` / ``clickhouse_server`` (user ``redline`` with a password)
* ``postgres_server_factory(password="...")`` / ``postgres_server``
* ``redis_server_factory(password=None | "...")`` / ``redis_server``

A factory returns the same server for the same arguments within a session. When a server binary is missing
the fixtures skip with the reason (``./run test`` installs the Debian packages, so in CI they run).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

HOST = "127.0.0.1"


class ServerUnavailable(Exception):
    """The server binary is not installed (the message says which package provides it)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {_tail(log)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {HOST}:{port} within {timeout:.0f} s: {_tail(log)}")


def _tail(log: Path | None, n: int = 2000) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-n:]


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass
class Server:
    """A running server: ``url`` includes the password (tests only); ``stop()`` ends it and removes its data."""

    kind: str
    host: str
    port: int
    user: str | None
    password: str | None
    datadir: Path
    proc: subprocess.Popen[bytes]
    http_port: int | None = None
    database: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, database: str | None = None, *, with_password: bool = True) -> str:
        auth = ""
        if self.user:
            auth = quote(self.user, safe="")
            if self.password and with_password:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        db = database if database is not None else (self.database or "")
        return f"{self.kind}://{auth}{self.host}:{self.port}/{db}"

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.datadir, ignore_errors=True)


# -- ClickHouse -----------------------------------------------------------------------------------------

def clickhouse_binary() -> list[str]:
    for cand in ("/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"):
        if os.access(cand, os.X_OK):
            return [cand]
    found = shutil.which("clickhouse-server")
    if found:
        return [found]
    found = shutil.which("clickhouse")
    if found:
        return [found, "server"]
    raise ServerUnavailable("clickhouse-server is not installed (Debian package clickhouse-server)")


def start_clickhouse(
    password: str | None = "ch-test-pw", *, user: str = "redline", readonly_user: bool = False, timeout: float = 60
) -> Server:
    """Start ClickHouse with one user (``default`` when user is "default"); configs accepted by 18.16 and later."""
    cmd = clickhouse_binary()
    datadir = Path(tempfile.mkdtemp(prefix="redline-ch-"))
    tcp, http = free_port(), free_port()
    for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
        (datadir / sub).mkdir()
    (datadir / "config.xml").write_text(f"""<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{datadir}/log/server.log</log><errorlog>{datadir}/log/error.log</errorlog>
        <size>10M</size><count>1</count></logger>
    <listen_host>{HOST}</listen_host>
    <tcp_port>{tcp}</tcp_port>
    <http_port>{http}</http_port>
    <max_connections>64</max_connections>
    <max_concurrent_queries>32</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <path>{datadir}/data/</path>
    <tmp_path>{datadir}/tmp/</tmp_path>
    <user_files_path>{datadir}/user_files/</user_files_path>
    <format_schema_path>{datadir}/format_schemas/</format_schema_path>
    <users_config>{datadir}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mlock_executable>false</mlock_executable>
</yandex>
""")
    pw = f"<password>{password}</password>" if password else "<password></password>"
    users = {user: pw} if user == "default" else {"default": "<password>not-used-" + os.urandom(8).hex()
                                                    + "</password>", user: pw}
    user_xml = "".join(
        f"<{name}>{p}<networks><ip>127.0.0.1</ip><ip>::1</ip></networks>"
        f"<profile>{'readonly' if readonly_user and name == user else 'default'}</profile>"
        f"<quota>default</quota></{name}>"
        for name, p in users.items())
    (datadir / "users.xml").write_text(f"""<?xml version="1.0"?>
<yandex>
    <profiles>
        <default><max_memory_usage>4000000000</max_memory_usage><max_threads>4</max_threads></default>
        <readonly><readonly>1</readonly></readonly>
    </profiles>
    <users>{user_xml}</users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval>
    </default></quotas>
</yandex>
""")
    log = datadir / "log" / "stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([*cmd, "--config-file", str(datadir / "config.xml")], cwd=datadir,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        _wait_port(tcp, proc, timeout, log)
    except BaseException:
        _stop(proc)
        shutil.rmtree(datadir, ignore_errors=True)
        raise
    return Server("clickhouse", HOST, tcp, user, password, datadir, proc, http_port=http, database="default")


def clickhouse_client(server: Server, **kwargs: Any) -> Any:
    from clickhouse_driver import Client

    return Client(host=server.host, port=server.port, user=server.user or "default",
                  password=server.password or "", **kwargs)


# -- PostgreSQL -----------------------------------------------------------------------------------------

def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ServerUnavailable("PostgreSQL is not installed (Debian package postgresql)")


def _as_postgres_user() -> tuple[list[str], int | None, int | None]:
    """PostgreSQL refuses to run as root: run as the ``postgres`` system user when we are root."""
    if os.geteuid() != 0:
        return [], None, None
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailable("running as root and there is no 'postgres' user to run PostgreSQL as") from None
    return [], pw.pw_uid, pw.pw_gid


def start_postgres(password: str | None = "pg-test-pw", *, user: str = "redline", timeout: float = 60) -> Server:
    bindir = postgres_bindir()
    _, uid, gid = _as_postgres_user()
    datadir = Path(tempfile.mkdtemp(prefix="redline-pg-"))
    pgdata, sockdir = datadir / "data", datadir / "sock"
    sockdir.mkdir()
    pwfile = datadir / "pwfile"
    pwfile.write_text((password or "unused") + "\n")
    if uid is not None and gid is not None:
        for p in (datadir, sockdir, pwfile):
            os.chown(p, uid, gid)

    def demote() -> None:
        if gid is not None and uid is not None:
            os.setgid(gid)
            os.setuid(uid)

    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    env.pop("PGPASSWORD", None)
    auth = "scram-sha-256" if password else "trust"
    res = subprocess.run([str(bindir / "initdb"), "-D", str(pgdata), "-U", user, "--pwfile", str(pwfile),
                          "-A", auth, "-E", "UTF8", "--no-sync"],
                         preexec_fn=demote, env=env, cwd=datadir, capture_output=True)
    if res.returncode != 0:
        shutil.rmtree(datadir, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {res.stderr.decode(errors='replace')[-2000:]}")
    port = free_port()
    log = datadir / "server.log"
    with open(log, "wb") as err:
        if uid is not None:
            os.chown(log, uid, gid or 0)
        proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(pgdata), "-p", str(port), "-c", f"listen_addresses={HOST}",
             "-c", f"unix_socket_directories={sockdir}", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "shared_buffers=64MB"],
            preexec_fn=demote, env=env, cwd=datadir, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        _wait_port(port, proc, timeout, log)
        _wait_postgres_ready(HOST, port, user, password, timeout)
    except BaseException:
        _stop(proc)
        shutil.rmtree(datadir, ignore_errors=True)
        raise
    return Server("postgresql", HOST, port, user, password, datadir, proc, database="postgres",
                  extra={"socket_dir": str(sockdir)})


def _wait_postgres_ready(host: str, port: int, user: str, password: str | None, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(host=host, port=port, user=user, password=password or "", dbname="postgres",
                            connect_timeout=3).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def postgres_connect(server: Server, dbname: str | None = None, **kwargs: Any) -> Any:
    import psycopg

    return psycopg.connect(host=server.host, port=server.port, user=server.user, password=server.password or "",
                           dbname=dbname or server.database or "postgres", **kwargs)


# -- Redis ----------------------------------------------------------------------------------------------

def start_redis(password: str | None = None, *, timeout: float = 30) -> Server:
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.access("/usr/bin/redis-server",
                                                                                     os.X_OK) else None)
    if not binary:
        raise ServerUnavailable("redis-server is not installed (Debian package redis-server)")
    datadir = Path(tempfile.mkdtemp(prefix="redline-redis-"))
    port = free_port()
    log = datadir / "redis.log"
    cmd = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(datadir),
           "--logfile", str(log), "--daemonize", "no"]
    if password:
        cmd += ["--requirepass", password]
    proc = subprocess.Popen(cmd, cwd=datadir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_port(port, proc, timeout, log)
    except BaseException:
        _stop(proc)
        shutil.rmtree(datadir, ignore_errors=True)
        raise
    return Server("redis", HOST, port, None, password, datadir, proc)


# -- pytest fixtures ------------------------------------------------------------------------------------

def _factory(start: Callable[..., Server]) -> Iterator[Callable[..., Server]]:
    started: dict[tuple[tuple[str, Any], ...], Server] = {}

    def make(**kwargs: Any) -> Server:
        key = tuple(sorted(kwargs.items()))
        if key not in started:
            try:
                started[key] = start(**kwargs)
            except ServerUnavailable as exc:
                pytest.skip(str(exc))
        return started[key]

    try:
        yield make
    finally:
        for server in started.values():
            with contextlib.suppress(Exception):
                server.stop()


@pytest.fixture(scope="session")
def clickhouse_server_factory() -> Iterator[Callable[..., Server]]:
    """``factory(password="..." | None, user="redline" | "default", readonly_user=False)`` -> Server."""
    yield from _factory(start_clickhouse)


@pytest.fixture(scope="session")
def clickhouse_server(clickhouse_server_factory: Callable[..., Server]) -> Server:
    return clickhouse_server_factory()


@pytest.fixture(scope="session")
def postgres_server_factory() -> Iterator[Callable[..., Server]]:
    """``factory(password="..." | None, user="redline")`` -> Server (superuser ``user``, database postgres)."""
    yield from _factory(start_postgres)


@pytest.fixture(scope="session")
def postgres_server(postgres_server_factory: Callable[..., Server]) -> Server:
    return postgres_server_factory()


@pytest.fixture(scope="session")
def redis_server_factory() -> Iterator[Callable[..., Server]]:
    """``factory(password=None | "...")`` -> Server (no persistence, data dir removed at the end)."""
    yield from _factory(start_redis)


@pytest.fixture(scope="session")
def redis_server(redis_server_factory: Callable[..., Server]) -> Server:
    return redis_server_factory()


# -- test data: tables shaped like DeepSeek's leaked ClickHouse log_stream ----------------------------------

LOG_STREAM_COLUMNS = ("timestamp", "span_name", "string.names", "string.values", "number.names", "number.values",
                      "_service", "_host", "_source")


def clickhouse_create_log_stream(client: Any, table: str = "default.log_stream", *, sample_by: bool = False) -> None:
    """``log_stream`` as in the January 2025 exposure (DateTime for 18.16, which has no DateTime64)."""
    order = "ORDER BY (timestamp, intHash32(_row)) SAMPLE BY intHash32(_row)" if sample_by else "ORDER BY timestamp"
    row_col = ", _row UInt32" if sample_by else ""
    client.execute(f"""CREATE TABLE {table} (
        timestamp DateTime, span_name String,
        `string.names` Array(String), `string.values` Array(String),
        `number.names` Array(String), `number.values` Array(Float64),
        _service String, _host String, _source String{row_col}
    ) ENGINE = MergeTree PARTITION BY toYYYYMMDD(timestamp) {order}""")


def log_stream_tuples(rows: Any, *, with_row: bool = False, first: int = 0) -> Iterator[tuple[Any, ...]]:
    from datetime import datetime

    for i, r in enumerate(rows):
        ts = datetime.strptime(str(r["timestamp"])[:19], "%Y-%m-%d %H:%M:%S")
        t = (ts, r["span_name"], r["string.names"], r["string.values"], r["number.names"], r["number.values"],
             r["_service"], r["_host"], r["_source"])
        yield (*t, first + i) if with_row else t


def clickhouse_insert(client: Any, table: str, columns: tuple[str, ...] | None, rows: Any,
                      batch: int = 20_000) -> int:
    """Insert an iterable of tuples in batches; returns the row count."""
    cols = f" ({', '.join('`' + c + '`' for c in columns)})" if columns else ""
    n = 0
    buf: list[tuple[Any, ...]] = []
    for row in rows:
        buf.append(row)
        if len(buf) >= batch:
            client.execute(f"INSERT INTO {table}{cols} VALUES", buf)
            n += len(buf)
            buf = []
    if buf:
        client.execute(f"INSERT INTO {table}{cols} VALUES", buf)
        n += len(buf)
    return n


def run_redline_scan(argv: list[str], tmp_path: Path) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """``redline scan ARGV --format jsonl``: exit code, records and the database summary (if any)."""
    import json

    from redline.cli import main

    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    for p in (out, summary):
        p.unlink(missing_ok=True)
    try:
        code = main(["scan", *argv, "--format", "jsonl", "--no-progress", "-o", str(out), "--db-summary",
                     str(summary)])
    except SystemExit as exc:
        code = int(exc.code or 0)
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return code, records, json.loads(summary.read_text()) if summary.exists() else {}
