"""The throwaway-server fixtures other suites reuse: Redis with and without a password, ClickHouse without one."""

from __future__ import annotations

import socket
from collections.abc import Callable

from tests.servers import Server, clickhouse_client


def _redis(server: Server, *commands: str) -> list[bytes]:
    replies = []
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        for cmd in commands:
            s.sendall(cmd.encode() + b"\r\n")
            replies.append(s.recv(1024))
    return replies


def test_redis_with_and_without_password(redis_server_factory: Callable[..., Server]) -> None:
    open_ = redis_server_factory()
    assert _redis(open_, "PING") == [b"+PONG\r\n"]
    locked = redis_server_factory(password="r3dis-pw")
    assert locked.port != open_.port
    noauth, ok, pong = _redis(locked, "PING", "AUTH r3dis-pw", "PING")
    assert noauth.startswith(b"-NOAUTH") and ok == b"+OK\r\n" and pong == b"+PONG\r\n"
    assert redis_server_factory(password="r3dis-pw") is locked  # shared per session


def test_clickhouse_default_user_without_password(clickhouse_server_factory: Callable[..., Server]) -> None:
    server = clickhouse_server_factory(password=None, user="default")
    assert server.url() == f"clickhouse://default@{server.host}:{server.port}/default"
    assert clickhouse_client(server).execute("SELECT 1") == [(1,)]
