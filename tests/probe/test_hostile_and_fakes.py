"""Hostile servers (garbage banners, endless replies, slow drip, resets) stay within the probe's time and byte
bounds; small fake servers on 127.0.0.1 check the MongoDB, Memcached, Elasticsearch, CouchDB, HTTP admin and Redis
protected-mode fingerprints."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from redline.probe import ENDPOINT_BUDGET, Options, Result, probe, probe_endpoint
from redline.probe.protocols import bson_decode, bson_encode
from redline.probe.targets import Endpoint

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
TIMEOUT = 0.4
CAP = 8192
SOCKET_READ = 256 * 1024


async def _serve(handler: Handler, opts: Options, port_hint: int | None = None) -> Result:
    async def wrapped(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await handler(r, w)
        except (ConnectionError, asyncio.CancelledError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await probe_endpoint(Endpoint("127.0.0.1", port), opts)
    finally:
        server.close()


def run(handler: Handler, **kw: Any) -> Result:
    opts = Options(timeout=TIMEOUT, cap=CAP, **kw)
    return asyncio.run(_serve(handler, opts))


# -- hostile --------------------------------------------------------------------------------------------

async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(os.urandom(300) + b"\r\n\x00\xff" * 50)
    await w.drain()
    await asyncio.sleep(5)


async def endless(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    chunk = b"$" + b"9" * 65535  # a never-ending "bulk length", then just bytes
    while True:
        w.write(chunk)
        await w.drain()


async def endless_http(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        w.write(b"ffff\r\n" + b"a" * 0xFFFF + b"\r\n")
        await w.drain()


async def endless_headers(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(b"HTTP/1.1 200 OK\r\n")
    while True:
        w.write(b"X-A: " + b"b" * 1000 + b"\r\n")
        await w.drain()


async def slow_drip(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    for b in b"HTTP/1.1 200 OK\r\nServer: drip\r\n\r\n" * 100:
        w.write(bytes([b]))
        await w.drain()
        await asyncio.sleep(1)


async def reset(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def huge_lengths(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    # claims of enormous messages in every protocol's framing: none may be allocated or awaited in full
    w.write(b"R\x7f\xff\xff\xff" + b"$2147483647\r\n" + b"\x00\xff\xff\xff\xff\x0f" + b"\xff\xff\xff\x7f" * 4)
    await w.drain()
    await asyncio.sleep(5)


BOUND = TIMEOUT * ENDPOINT_BUDGET + 1.0  # the endpoint budget, plus slack for a loaded machine


@pytest.mark.parametrize("handler", [garbage, endless, endless_http, endless_headers, slow_drip, reset, silent,
                                     huge_lengths], ids=lambda h: h.__name__)
def test_hostile_server_within_bounds(handler: Handler) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        res = run(handler)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    took = time.monotonic() - started
    assert took < BOUND, f"{handler.__name__}: {took:.2f} s"
    assert res.verdict in ("not-that-service", "timeout"), res
    # six probes at most, each reading at most the cap plus one socket read (asyncio reads up to 256 KiB at once)
    assert res.bytes_read <= 6 * (CAP + SOCKET_READ), res.bytes_read
    assert peak < 4 << 20, f"{handler.__name__}: peak traced memory {peak:,} bytes"


def test_hostile_servers_concurrently_within_bounds() -> None:
    async def main() -> list[Result]:
        servers = []
        for h in (garbage, endless, slow_drip, reset, silent) * 4:
            servers.append(await asyncio.start_server(h, "127.0.0.1", 0))
        eps = [Endpoint("127.0.0.1", s.sockets[0].getsockname()[1]) for s in servers]
        try:
            return await probe(eps, Options(timeout=TIMEOUT, cap=CAP, concurrency=8, rate=200))
        finally:
            for s in servers:
                s.close()

    started = time.monotonic()
    results = asyncio.run(main())
    # 20 endpoints, 8 at a time: three waves of at most one endpoint budget each
    assert time.monotonic() - started < 3 * BOUND
    assert all(r.verdict in ("not-that-service", "timeout") for r in results)


def test_closed_port_and_rate_limit() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
    started = time.monotonic()
    results = asyncio.run(probe([Endpoint("127.0.0.1", port)] * 1 + [Endpoint("127.0.0.2", port),
                                                                        Endpoint("127.0.0.3", port)],
                                Options(timeout=1, rate=2)))
    assert [r.verdict for r in results] == ["closed"] * 3
    assert time.monotonic() - started >= 0.45  # 2 connections a second: the third waits ~0.5 s


# -- fakes of the other protocols -----------------------------------------------------------------------

def _bson(doc: dict[str, Any]) -> bytes:
    """Test-side BSON with lists and nested documents (the probe's encoder only needs flat commands)."""
    body = b""
    for k, v in doc.items():
        key = k.encode() + b"\0"
        if isinstance(v, list):
            body += b"\x04" + key + _bson({str(i): x for i, x in enumerate(v)})
        elif isinstance(v, dict):
            body += b"\x03" + key + _bson(v)
        elif isinstance(v, float):
            body += b"\x01" + key + struct.pack("<d", v)
        else:
            body += bson_encode({k: v})[4:-1]
    return struct.pack("<i", len(body) + 5) + body + b"\0"


def mongo(auth: bool) -> Handler:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            head = await r.readexactly(16)
            length, req, _, opcode = struct.unpack("<iiii", head)
            if not 16 < length <= 48_000_000:
                return  # as mongod: an impossible message length closes the connection
            body = await r.readexactly(length - 16)
            assert opcode == 2013
            cmd = bson_decode(body[5:])
            if "isMaster" in cmd:
                reply: dict[str, Any] = {"ismaster": True, "maxWireVersion": 17, "ok": 1.0}
            elif "buildInfo" in cmd:
                reply = {"version": "6.0.4", "ok": 1.0}
            elif auth:
                reply = {"ok": 0.0, "errmsg": "command listDatabases requires authentication", "code": 13}
            else:
                reply = {"databases": [{"name": "admin"}, {"name": "chats"}], "ok": 1.0}
            payload = struct.pack("<I", 0) + b"\0" + _bson(reply)
            w.write(struct.pack("<iiii", 16 + len(payload), 99, req, 2013) + payload)
            await w.drain()
    return handler


async def memcached(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while True:
        line = await r.readline()
        if line == b"version\r\n":
            w.write(b"VERSION 1.6.18\r\n")
        elif line == b"stats\r\n":
            w.write(b"STAT pid 1\r\nSTAT curr_items 42\r\nSTAT bytes 4096\r\nEND\r\n")
        else:
            w.write(b"ERROR\r\n")
        await w.drain()


def http(routes: dict[str, tuple[int, dict[str, str], bytes]]) -> Handler:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        request = await r.readline()
        while (await r.readline()) not in (b"\r\n", b""):
            pass
        parts = request.split()
        if len(parts) < 2 or not request.startswith(b"GET "):
            w.write(b"garbage\n")
            return
        status, headers, body = routes.get(parts[1].decode(), (404, {}, b"not found"))
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        w.write(head.encode() + body)
        await w.drain()
    return handler


def _j(x: Any) -> bytes:
    return json.dumps(x).encode()


ES_ROOT = _j({"name": "n1", "cluster_name": "c", "version": {"number": "8.11.1"}, "tagline": "You Know, for Search"})
OS_ROOT = _j({"name": "n1", "cluster_name": "c", "version": {"number": "2.11.0", "distribution": "opensearch"},
              "tagline": "The OpenSearch Project: https://opensearch.org/"})


async def redis_protected(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read(100)
    w.write(b"-DENIED Redis is running in protected mode because protected mode is enabled and no password is set "
            b"for the default user.\r\n")
    await w.drain()


@pytest.mark.parametrize(("handler", "service", "verdict", "version"), [
    (mongo(auth=False), "mongodb", "open", "6.0.4"),
    (mongo(auth=True), "mongodb", "auth-required", "6.0.4"),
    (memcached, "memcached", "open", "1.6.18"),
    (http({"/": (200, {}, ES_ROOT), "/_cat/indices?format=json&h=index,docs.count":
           (200, {}, _j([{"index": "chats", "docs.count": "1200"}]))}), "elasticsearch", "open", "8.11.1"),
    (http({"/": (401, {"WWW-Authenticate": 'Basic realm="security" charset="UTF-8"'}, b"{}")}),
     "elasticsearch", "auth-required", None),
    (http({"/": (200, {}, OS_ROOT), "/_cat/indices?format=json&h=index,docs.count": (401, {}, b"")}),
     "opensearch", "auth-required", "2.11.0"),
    (http({"/": (200, {}, _j({"couchdb": "Welcome", "version": "3.3.2"})), "/_all_dbs": (200, {}, _j(["a", "b"]))}),
     "couchdb", "open", "3.3.2"),
    (http({"/": (200, {}, _j({"couchdb": "Welcome", "version": "3.3.2"})), "/_all_dbs": (401, {}, b"{}")}),
     "couchdb", "auth-required", "3.3.2"),
    (http({"/": (200, {}, b"<html><title>Tabix admin</title><body>tables</body></html>")}),
     "http-admin", "open", None),
    (http({"/": (200, {"Server": "nginx"}, b"<title>Welcome to nginx!</title>")}), "http", "not-that-service",
     None),
    (http({"/": (200, {}, b"<title>Grafana</title><form><input type='password'></form>")}), "http-admin",
     "auth-required", None),
    (redis_protected, "redis", "restricted", None),
], ids=["mongo-open", "mongo-auth", "memcached", "es-open", "es-auth", "opensearch-auth", "couch-open", "couch-auth",
        "http-admin", "http-plain", "http-login", "redis-protected"])
def test_fingerprints(handler: Handler, service: str, verdict: str, version: str | None) -> None:
    res = asyncio.run(_serve(handler, Options(timeout=0.5)))
    assert (res.service, res.verdict, res.version) == (service, verdict, version), res
    assert res.evidence
    if verdict == "open":
        assert res.fix and res.severity in ("high", "medium")
