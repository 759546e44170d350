"""Protocol fingerprints: each probe speaks one protocol's harmless opening and classifies the reply.

A probe returns an :class:`Identified` when the peer spoke its protocol (with a verdict and evidence) and
``None`` when it did not. Probes never send a password (only the empty default one, as an absent password),
never write, and read through :class:`~redline.probe.wire.Conn`, which caps bytes; the caller bounds time.

Facts used (from the protocols' public descriptions):

* ClickHouse native: the client's Hello is packet 0 (varint) with client name, version major/minor, protocol
  revision (varints), then database, user and password strings (varint length + bytes). The server answers
  Hello (0: name, major, minor, revision, then timezone / display name / patch by revision) or Exception
  (2: UInt32 code, name, message, stack trace, nested flag). Codes 192/193/194/516: unknown user / wrong or
  required password / authentication failed; 195: address not allowed.
* ClickHouse HTTP: ``GET /`` answers ``Ok.``; ``GET /?query=...`` runs a read-only query (GET is read-only);
  errors read ``Code: N. DB::Exception: ...``.
* PostgreSQL: StartupMessage = Int32 length, Int32 196608 (3.0), ``name\\0value\\0`` pairs, ``\\0``. Replies are
  ``type byte + Int32 length``; ``R`` carries the authentication request code (0 ok, 3 cleartext password,
  5 MD5, 7 GSS, 9 SSPI, 10 SASL with mechanism names), ``E`` an error (fields ``S``, ``C`` SQLSTATE, ``M``), ``S``
  parameter status (``server_version``), ``Z`` ready for query.
* Redis: RESP arrays of bulk strings (``*1\\r\\n$4\\r\\nINFO\\r\\n``); replies ``$len`` bulk, ``+`` simple, ``-`` error
  (``-NOAUTH``, ``-DENIED`` for protected mode), ``:`` integer, ``*`` array.
* MongoDB: OP_MSG (opCode 2013): header (length, requestID, responseTo, opCode, Int32 LE), flag bits, section
  kind 0 with one BSON document (``{isMaster: 1, $db: "admin"}``); ``listDatabases`` fails with code 13
  (Unauthorized) when authentication is on.
* Memcached text protocol: ``version`` -> ``VERSION x.y.z``; ``stats`` -> ``STAT name value`` lines and ``END``.
* Elasticsearch/OpenSearch ``GET /``: JSON with ``version.number`` (``distribution: opensearch``) and the tagline
  "You Know, for Search"; 401 with ``WWW-Authenticate`` when security is on. CouchDB ``GET /``:
  ``{"couchdb": "Welcome", "version": ...}``; ``GET /_all_dbs`` needs an admin unless it is open.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from redline.probe import chsql
from redline.probe.wire import Conn, ProtocolError

OPEN, AUTH, RESTRICTED, OTHER, CLOSED, TIMEOUT = (
    "open", "auth-required", "restricted", "not-that-service", "closed", "timeout")
VERDICTS = (OPEN, AUTH, RESTRICTED, OTHER, CLOSED, TIMEOUT)
HTTP_HEADER_CAP = 16 * 1024
EVIDENCE_LIST = 8  # names listed in evidence at most


@dataclass
class Identified:
    service: str
    verdict: str
    version: str | None = None
    evidence: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


Probe = Callable[[Conn, str, int], Awaitable[Identified | None]]


def printable(data: bytes | str, n: int = 48) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = "".join(c if c.isprintable() else "." for c in text[:n])
    return text + ("…" if len(data) > n else "")


def _names(items: list[str]) -> str:
    shown = ", ".join(printable(x, 40) for x in items[:EVIDENCE_LIST])
    return shown + (f" (+{len(items) - EVIDENCE_LIST} more)" if len(items) > EVIDENCE_LIST else "")


# -- HTTP -----------------------------------------------------------------------------------------------

@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8", "replace"))
        except ValueError:
            return None


async def http_get(conn: Conn, host: str, port: int, path: str, *, body_cap: int = 32 * 1024) -> HttpReply:
    hosthdr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    await conn.send(f"GET {path} HTTP/1.1\r\nHost: {hosthdr}\r\nUser-Agent: redline-probe\r\nAccept: */*\r\n"
                    "Connection: close\r\n\r\n".encode())
    status_line = await conn.line(1024)
    m = re.match(rb"HTTP/1\.[01] (\d{3})", status_line)
    if not m:
        raise ProtocolError("not HTTP")
    headers: dict[str, str] = {}
    size = len(status_line)
    while True:
        line = await conn.line(8192)
        size += len(line)
        if size > HTTP_HEADER_CAP:
            raise ProtocolError("HTTP headers too long")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await _http_body(conn, headers, body_cap)
    return HttpReply(int(m.group(1)), headers, body)


async def _http_body(conn: Conn, headers: dict[str, str], cap: int) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while len(out) < cap:
            size_line = await conn.line(64)
            try:
                n = int(size_line.split(b";")[0].strip() or b"x", 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            if n == 0:
                break
            take = min(n, cap - len(out))
            out += await conn.exactly(take)
            if take < n:
                break
            await conn.exactly(2)
        return bytes(out)
    length = headers.get("content-length")
    if length and length.isdigit():
        return await conn.exactly(min(int(length), cap)) if int(length) else b""
    return await conn.until_eof(cap)


_CH_ERROR = re.compile(rb"Code: (\d+)[.,]")
_CH_AUTH_CODES = {192, 193, 194, 516}
_CH_RESTRICTED_CODES = {195, 164, 497}  # address not allowed, readonly, access denied


def _ch_code(body: bytes) -> int | None:
    m = _CH_ERROR.search(body[:2048])
    return int(m.group(1)) if m and b"Exception" in body[:4096] else None


def _ch_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").split("Stack trace", 1)[0]
    text = text.replace("e.displayText() = ", "").replace("DB::Exception: ", "")
    return printable(" ".join(text.split()), 160)


async def _fresh_get(host: str, port: int, tls: bool, timeout: float, path: str, body_cap: int = 32 * 1024
                     ) -> HttpReply:
    conn = await Conn.open(host, port, timeout=timeout, tls=tls, cap=body_cap + HTTP_HEADER_CAP + 1024)
    try:
        return await http_get(conn, host, port, path, body_cap=body_cap)
    finally:
        await conn.close()


def ch_http_path(query: str) -> str:
    """The URL path for one allow-listed ClickHouse query (GET requests run read-only)."""
    return "/?query=" + quote(chsql.check(query, allow_format=True), safe="")


async def probe_http(conn: Conn, host: str, port: int, *, tls: bool = False, timeout: float = 3.0
                     ) -> Identified | None:
    root = await http_get(conn, host, port, "/")
    await conn.close()
    server = root.headers.get("server", "")
    is_ch = (root.body.strip() == b"Ok." or any(h.startswith("x-clickhouse") for h in root.headers)
             or _ch_code(root.body) is not None)
    if is_ch:
        return await _clickhouse_http(host, port, tls, timeout, root)
    doc = root.json()
    if isinstance(doc, dict) and (doc.get("tagline") == "You Know, for Search"
                                  or ("cluster_name" in doc and isinstance(doc.get("version"), dict))):
        return await _elastic(host, port, tls, timeout, doc)
    if isinstance(doc, dict) and doc.get("couchdb") == "Welcome":
        return await _couchdb(host, port, tls, timeout, doc)
    if root.status == 401 and "realm=\"security\"" in root.headers.get("www-authenticate", ""):
        return Identified("elasticsearch", AUTH, None, [f"GET / -> 401 ({root.headers['www-authenticate'][:60]})"])
    return _generic_http(root, server)


async def _clickhouse_http(host: str, port: int, tls: bool, timeout: float, root: HttpReply) -> Identified:
    svc = "clickhouse-http"
    rep = await _fresh_get(host, port, tls, timeout, ch_http_path("SELECT version()"))
    code = _ch_code(rep.body)
    if rep.status == 200 and code is None:
        version = printable(rep.body.strip(), 40)
        dbs = await _fresh_get(host, port, tls, timeout, ch_http_path("SHOW DATABASES"))
        if dbs.status == 200 and _ch_code(dbs.body) is None:
            names = [n for n in dbs.body.decode("utf-8", "replace").split("\n") if n]
            return Identified(svc, OPEN, version, [
                "user 'default' without a password ran SELECT version() and SHOW DATABASES over HTTP",
                f"databases: {_names(names)}"], {"databases": names})
        return Identified(svc, RESTRICTED, version, [f"SELECT version() ran, SHOW DATABASES refused: "
                                                     f"{_ch_message(dbs.body)}"])
    if code in _CH_AUTH_CODES or (rep.status in (401, 403) and code is None):
        return Identified(svc, AUTH, None, [f"HTTP {rep.status}: {_ch_message(rep.body)}"])
    return Identified(svc, RESTRICTED, None, [f"HTTP {rep.status}: {_ch_message(rep.body)}"])


async def _elastic(host: str, port: int, tls: bool, timeout: float, doc: dict[str, Any]) -> Identified:
    ver = doc.get("version") if isinstance(doc.get("version"), dict) else {}
    assert isinstance(ver, dict)
    svc = "opensearch" if ver.get("distribution") == "opensearch" else "elasticsearch"
    version = printable(str(ver.get("number", "")), 30) or None
    rep = await _fresh_get(host, port, tls, timeout, "/_cat/indices?format=json&h=index,docs.count",
                           body_cap=256 * 1024)
    if rep.status == 200:
        data = rep.json()
        idx = [str(i.get("index")) for i in data if isinstance(i, dict)] if isinstance(data, list) else []
        docs = sum(int(i.get("docs.count") or 0) for i in data if isinstance(i, dict)
                   and str(i.get("docs.count") or "0").isdigit()) if isinstance(data, list) else 0
        return Identified(svc, OPEN, version, [
            "GET / and GET /_cat/indices answered without credentials",
            f"{len(idx)} index(es), {docs:,} document(s): {_names(idx)}"], {"indices": idx})
    if rep.status in (401, 403):
        return Identified(svc, AUTH if rep.status == 401 else RESTRICTED, version,
                          [f"GET / answered; GET /_cat/indices -> {rep.status}"])
    return Identified(svc, RESTRICTED, version, [f"GET /_cat/indices -> {rep.status}"])


async def _couchdb(host: str, port: int, tls: bool, timeout: float, doc: dict[str, Any]) -> Identified:
    version = printable(str(doc.get("version", "")), 30) or None
    rep = await _fresh_get(host, port, tls, timeout, "/_all_dbs", body_cap=256 * 1024)
    data = rep.json()
    if rep.status == 200 and isinstance(data, list):
        names = [str(x) for x in data]
        return Identified("couchdb", OPEN, version, ["GET /_all_dbs answered without credentials",
                                                     f"databases: {_names(names)}"], {"databases": names})
    if rep.status in (401, 403):
        return Identified("couchdb", AUTH, version, [f"GET /_all_dbs -> {rep.status}"])
    return Identified("couchdb", RESTRICTED, version, [f"GET /_all_dbs -> {rep.status}"])


_TITLE = re.compile(rb"<title[^>]*>([^<]{0,200})</title>", re.IGNORECASE)
_ADMIN = re.compile(r"admin|dashboard|console|phpmyadmin|adminer|kibana|grafana|pgadmin|redis ?commander|"
                    r"mongo[- ]express|rabbitmq|jenkins|portainer|manager|control panel|tabix|metabase",
                    re.IGNORECASE)


def _generic_http(root: HttpReply, server: str) -> Identified:
    m = _TITLE.search(root.body)
    title = printable(m.group(1).strip(), 80) if m else ""
    ev = [f"HTTP {root.status}" + (f", title {title!r}" if title else "") + (f", Server: {printable(server, 40)}"
                                                                               if server else "")]
    if root.status in (401, 407) or "www-authenticate" in root.headers:
        return Identified("http", AUTH, None, ev)
    if root.status == 200 and title and _ADMIN.search(title):
        if re.search(rb"type=[\"']?password", root.body, re.IGNORECASE):
            return Identified("http-admin", AUTH, None, [*ev, "login form"])
        return Identified("http-admin", OPEN, None, [*ev, "admin page served without a login"])
    return Identified("http", OTHER, None, ev)


# -- ClickHouse native ----------------------------------------------------------------------------------

CH_CLIENT_REVISION = 54423  # before password-complexity rules and nonces: the Hello reply stays simple
SERVER_HELLO, SERVER_EXCEPTION = 0, 2


def _ch_str(s: str) -> bytes:
    b = s.encode()
    return _varint(len(b)) + b


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ch_hello(user: str = "default") -> bytes:
    return (_varint(0) + _ch_str("redline-probe") + _varint(1) + _varint(0) + _varint(CH_CLIENT_REVISION)
            + _ch_str("") + _ch_str(user) + _ch_str(""))


async def probe_clickhouse_native(conn: Conn, host: str, port: int) -> Identified | None:
    await conn.send(ch_hello())
    kind = await conn.varint()
    if kind == SERVER_HELLO:
        name = (await conn.ch_string(256)).decode("utf-8", "replace")
        if "clickhouse" not in name.lower():
            return None
        major, minor, revision = await conn.varint(), await conn.varint(), await conn.varint()
        used = min(revision, CH_CLIENT_REVISION)
        patch: int | None = None
        if used >= 54058:
            await conn.ch_string(256)  # timezone
        if used >= 54372:
            await conn.ch_string(256)  # display name
        if used >= 54401:
            patch = await conn.varint()
        version = f"{major}.{minor}" + (f".{patch}" if patch is not None else "")
        return Identified("clickhouse-native", OPEN, version,
                          [f"Hello accepted user 'default' with an empty password ({printable(name, 30)}, "
                           f"revision {revision})"], {"hello": True})
    if kind == SERVER_EXCEPTION:
        code = await conn.u32le()
        name = (await conn.ch_string(256)).decode("utf-8", "replace")
        message = (await conn.ch_string(4096)).decode("utf-8", "replace")
        if not name.startswith("DB::") and "Exception" not in name:
            return None
        msg = printable(" ".join(message.replace("DB::Exception: ", "").split()), 160)
        if code in _CH_AUTH_CODES:
            return Identified("clickhouse-native", AUTH, None, [f"Hello refused: code {code}: {msg}"])
        return Identified("clickhouse-native", RESTRICTED, None, [f"Hello refused: code {code}: {msg}"])
    return None


def clickhouse_harmless_read(host: str, port: int, timeout: float, *, secure: bool = False) -> list[str]:
    """``SHOW DATABASES`` as ``default`` with an empty password over the native protocol (readonly=1)."""
    from clickhouse_driver import Client  # type: ignore[import-untyped]

    client = chsql.GuardedClient(Client(host=host, port=port, user="default", password="", connect_timeout=timeout,
                                        send_receive_timeout=timeout, sync_request_timeout=timeout,
                                        client_name="redline-probe", secure=secure, verify=False,
                                        settings={"readonly": 1, "max_result_rows": 10000}))
    try:
        try:
            rows = client.execute("SHOW DATABASES")
        except Exception as exc:
            if "readonly" not in str(exc).lower():
                raise
            client.disconnect()
            client = chsql.GuardedClient(Client(
                host=host, port=port, user="default", password="", connect_timeout=timeout,
                send_receive_timeout=timeout, client_name="redline-probe", secure=secure, verify=False))
            rows = client.execute("SHOW DATABASES")
        return [str(r[0]) for r in rows]
    finally:
        client.disconnect()


# -- PostgreSQL -----------------------------------------------------------------------------------------

PG_PROTOCOL = 196608
PG_AUTH = {0: "ok", 2: "Kerberos V5", 3: "a cleartext password", 5: "an MD5 password", 7: "GSSAPI", 9: "SSPI",
           10: "SASL"}


def pg_startup(user: str, database: str) -> bytes:
    body = struct.pack("!i", PG_PROTOCOL)
    for k, v in (("user", user), ("database", database), ("application_name", "redline-probe")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


async def _pg_message(conn: Conn) -> tuple[bytes, bytes]:
    head = await conn.exactly(5)
    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
    if not kind.isalpha() or length < 4 or length > 32 * 1024:
        raise ProtocolError("not a PostgreSQL message")
    return kind, await conn.exactly(length - 4)


def _pg_error(body: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


async def probe_postgres(conn: Conn, host: str, port: int, *, user: str = "postgres") -> Identified | None:
    await conn.send(pg_startup(user, "postgres"))
    kind, body = await _pg_message(conn)
    svc = "postgresql"
    if kind == b"E":
        f = _pg_error(body)
        if "C" not in f or "M" not in f:
            return None
        ev = [f"startup refused: {f['C']} {printable(f['M'], 160)}"]
        if f["C"] == "28P01":
            return Identified(svc, AUTH, None, ev)
        return Identified(svc, RESTRICTED, None, ev)
    if kind != b"R" or len(body) < 4:
        return None
    code = struct.unpack("!i", body[:4])[0]
    if code not in PG_AUTH:
        return None
    if code != 0:
        how = PG_AUTH[code]
        if code == 10:
            mechs = [m.decode("ascii", "replace") for m in body[4:].split(b"\0") if m]
            how = "SASL (" + ", ".join(mechs[:4]) + ")"
        return Identified(svc, AUTH, None, [f"user {user!r}: the server asks for {how}"], {"auth_code": code})
    return await _pg_after_ok(conn, user)


async def _pg_after_ok(conn: Conn, user: str) -> Identified:
    svc = "postgresql"
    params: dict[str, str] = {}
    ev = [f"user {user!r} logged in without a password (trust authentication)"]
    while True:
        kind, body = await _pg_message(conn)
        if kind == b"S":
            k, _, v = body.partition(b"\0")
            params[k.decode("ascii", "replace")] = v.rstrip(b"\0").decode("utf-8", "replace")
        elif kind == b"E":
            f = _pg_error(body)
            ev = [f"user {user!r} passed authentication without a password (trust), then: {f.get('C', '?')} "
                  f"{printable(f.get('M', ''), 120)}"]
            return Identified(svc, OPEN, params.get("server_version"), ev, {"trust": True, "session": False})
        elif kind == b"Z":
            break
    version = params.get("server_version")
    q = b"SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1\0"
    await conn.send(b"Q" + struct.pack("!i", len(q) + 4) + q)
    names: list[str] = []
    while True:
        kind, body = await _pg_message(conn)
        if kind == b"D" and len(body) >= 6:
            n = struct.unpack("!i", body[2:6])[0]
            if n >= 0:
                names.append(body[6:6 + n].decode("utf-8", "replace"))
        elif kind == b"E":
            ev.append("listing databases failed: " + printable(_pg_error(body).get("M", ""), 120))
            break
        elif kind == b"Z":
            ev.append(f"databases: {_names(names)}")
            break
    await conn.send(b"X" + struct.pack("!i", 4))
    return Identified(svc, OPEN, version, ev, {"trust": True, "session": True, "databases": names})


# -- Redis ----------------------------------------------------------------------------------------------

def resp_command(*args: str | bytes) -> bytes:
    out = bytearray(b"*%d\r\n" % len(args))
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return bytes(out)


class RespError(Exception):
    pass


async def resp_read(conn: Conn, *, bulk_cap: int = 1 << 20, depth: int = 0) -> Any:
    """One RESP2/RESP3 reply; bulk strings over ``bulk_cap`` and nesting deeper than 4 are protocol errors."""
    line = await conn.line(4096)
    if not line.endswith(b"\r\n"):
        raise ProtocolError("not RESP")
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest.decode("utf-8", "replace")
    if t == b"-":
        raise RespError(rest.decode("utf-8", "replace"))
    if t == b":":
        try:
            return int(rest)
        except ValueError:
            raise ProtocolError("not RESP") from None
    if t in (b"$", b"*", b"%"):
        try:
            n = int(rest)
        except ValueError:
            raise ProtocolError("not RESP") from None
        if n < 0:
            return None
        if t == b"$":
            if n > bulk_cap:
                raise ProtocolError(f"bulk string of {n:,} bytes")
            return (await conn.exactly(n + 2))[:-2]
        if depth >= 4 or n > 100_000:
            raise ProtocolError("RESP reply too deep or too long")
        count = n * 2 if t == b"%" else n
        return [await resp_read(conn, bulk_cap=bulk_cap, depth=depth + 1) for _ in range(count)]
    raise ProtocolError("not RESP")


def parse_info(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


async def probe_redis(conn: Conn, host: str, port: int) -> Identified | None:
    await conn.send(resp_command("INFO"))
    try:
        reply = await resp_read(conn, bulk_cap=256 * 1024)
    except RespError as exc:
        msg = str(exc)
        if msg.startswith("NOAUTH") or msg.startswith("WRONGPASS") or "Authentication required" in msg:
            return Identified("redis", AUTH, None, [f"INFO -> -{printable(msg, 120)}"])
        if msg.startswith("DENIED"):
            return Identified("redis", RESTRICTED, None, [f"INFO -> -{printable(msg, 120)}"])
        if msg.startswith("ERR unknown command") or msg.startswith("NOPERM"):
            await conn.send(resp_command("PING"))
            try:
                pong = await resp_read(conn, bulk_cap=1024)
            except RespError as exc2:
                m2 = str(exc2)
                if m2.startswith("NOAUTH"):
                    return Identified("redis", AUTH, None, [f"PING -> -{printable(m2, 120)}"])
                return None
            if pong == "PONG":
                return Identified("redis", OPEN, None, ["PING answered PONG without a password (INFO is disabled)"])
        return None
    if not isinstance(reply, bytes) or b"redis_version:" not in reply:
        return None
    info = parse_info(reply.decode("utf-8", "replace"))
    keys: dict[str, int] = {}
    for k, v in info.items():
        m = re.match(r"db(\d+)$", k)
        km = re.search(r"keys=(\d+)", v)
        if m and km:
            keys[k] = int(km.group(1))
    total = sum(keys.values())
    ev = ["INFO answered without a password",
          f"{total:,} key(s)" + (f" ({', '.join(f'{k}: {v:,}' for k, v in keys.items())})" if keys else "")]
    if info.get("role"):
        ev.append(f"role {printable(info['role'], 20)}, mode {printable(info.get('redis_mode', '?'), 20)}")
    return Identified("redis", OPEN, printable(info.get("redis_version", ""), 30) or None, ev,
                      {"keyspace": keys})


# -- MongoDB --------------------------------------------------------------------------------------------

OP_MSG, OP_REPLY = 2013, 1


def bson_encode(doc: dict[str, Any]) -> bytes:
    body = bytearray()
    for k, v in doc.items():
        key = k.encode() + b"\0"
        if isinstance(v, bool):
            body += b"\x08" + key + (b"\x01" if v else b"\x00")
        elif isinstance(v, int):
            body += b"\x10" + key + struct.pack("<i", v)
        elif isinstance(v, str):
            s = v.encode() + b"\0"
            body += b"\x02" + key + struct.pack("<i", len(s)) + s
        else:
            raise TypeError(f"cannot encode {type(v).__name__}")
    return struct.pack("<i", len(body) + 5) + bytes(body) + b"\0"


def bson_decode(data: bytes, depth: int = 0) -> dict[str, Any]:
    """A BSON document (the common types; others end decoding with a ProtocolError)."""
    if depth > 8 or len(data) < 5:
        raise ProtocolError("bad BSON")
    total = struct.unpack("<i", data[:4])[0]
    if total != len(data) or data[-1] != 0:
        raise ProtocolError("bad BSON length")
    out: dict[str, Any] = {}
    i = 4
    end = total - 1
    fixed = {0x01: 8, 0x07: 12, 0x09: 8, 0x11: 8, 0x12: 8, 0x13: 16, 0x0A: 0, 0x7F: 0, 0xFF: 0, 0x08: 1, 0x10: 4}
    try:
        while i < end:
            t = data[i]
            j = data.index(b"\0", i + 1, end)
            key = data[i + 1:j].decode("utf-8", "replace")
            i = j + 1
            if t in (0x02, 0x0D, 0x0E):
                n = struct.unpack("<i", data[i:i + 4])[0]
                if n < 1 or i + 4 + n > end:
                    raise ProtocolError("bad BSON string")
                out[key] = data[i + 4:i + 3 + n].decode("utf-8", "replace")
                i += 4 + n
            elif t in (0x03, 0x04):
                n = struct.unpack("<i", data[i:i + 4])[0]
                if n < 5 or i + n > end:
                    raise ProtocolError("bad BSON document")
                sub = bson_decode(data[i:i + n], depth + 1)
                out[key] = list(sub.values()) if t == 0x04 else sub
                i += n
            elif t == 0x05:
                n = struct.unpack("<i", data[i:i + 4])[0]
                if n < 0 or i + 5 + n > end:
                    raise ProtocolError("bad BSON binary")
                out[key] = data[i + 5:i + 5 + n]
                i += 5 + n
            elif t in fixed:
                raw = data[i:i + fixed[t]]
                if t == 0x01:
                    out[key] = struct.unpack("<d", raw)[0]
                elif t == 0x10:
                    out[key] = struct.unpack("<i", raw)[0]
                elif t in (0x12, 0x09):
                    out[key] = struct.unpack("<q", raw)[0]
                elif t == 0x08:
                    out[key] = raw == b"\x01"
                elif t == 0x0A:
                    out[key] = None
                else:
                    out[key] = raw
                i += fixed[t]
            else:
                raise ProtocolError(f"BSON type {t:#x}")
    except (struct.error, ValueError):
        raise ProtocolError("bad BSON") from None
    return out


async def mongo_command(conn: Conn, doc: dict[str, Any], request_id: int) -> dict[str, Any]:
    payload = struct.pack("<I", 0) + b"\x00" + bson_encode(doc)
    await conn.send(struct.pack("<iiii", 16 + len(payload), request_id, 0, OP_MSG) + payload)
    head = await conn.exactly(16)
    length, _, response_to, opcode = struct.unpack("<iiii", head)
    if opcode not in (OP_MSG, OP_REPLY) or not 21 <= length <= 512 * 1024 or response_to != request_id:
        raise ProtocolError("not a MongoDB reply")
    body = await conn.exactly(length - 16)
    if opcode == OP_REPLY:
        return bson_decode(body[20:])
    if body[4] != 0:
        raise ProtocolError("unexpected OP_MSG section")
    n = struct.unpack("<i", body[5:9])[0]
    return bson_decode(body[5:5 + n])


async def probe_mongodb(conn: Conn, host: str, port: int) -> Identified | None:
    hello = await mongo_command(conn, {"isMaster": 1, "$db": "admin"}, 1)
    if "maxWireVersion" not in hello and "ismaster" not in hello:
        return None
    version: str | None = None
    try:
        build = await mongo_command(conn, {"buildInfo": 1, "$db": "admin"}, 2)
        if isinstance(build.get("version"), str):
            version = printable(build["version"], 30)
    except ProtocolError:
        pass
    dbs = await mongo_command(conn, {"listDatabases": 1, "nameOnly": True, "$db": "admin"}, 3)
    if dbs.get("ok") in (1, 1.0, True):
        names = [str(d.get("name")) for d in dbs.get("databases", []) if isinstance(d, dict)]
        return Identified("mongodb", OPEN, version, ["listDatabases answered without credentials",
                                                     f"databases: {_names(names)}"], {"databases": names})
    msg = printable(str(dbs.get("errmsg", "")), 120)
    if dbs.get("code") in (13, 18) or "auth" in msg.lower():
        return Identified("mongodb", AUTH, version, [f"listDatabases refused: {msg}"])
    return Identified("mongodb", RESTRICTED, version, [f"listDatabases refused: {msg}"])


# -- Memcached ------------------------------------------------------------------------------------------

async def probe_memcached(conn: Conn, host: str, port: int) -> Identified | None:
    await conn.send(b"version\r\n")
    line = await conn.line(256)
    m = re.match(rb"VERSION ([\w.\-]{1,40})\r?\n$", line)
    if not m:
        return None
    version = m.group(1).decode()
    await conn.send(b"stats\r\n")
    stats: dict[str, str] = {}
    for _ in range(400):
        row = await conn.line(512)
        if row.startswith(b"END"):
            break
        if row.startswith(b"STAT "):
            parts = row.decode("utf-8", "replace").split()
            if len(parts) >= 3:
                stats[parts[1]] = parts[2]
        else:
            return Identified("memcached", AUTH, version, [f"stats -> {printable(row.strip(), 80)}"])
    items = stats.get("curr_items", "?")
    return Identified("memcached", OPEN, version, [
        "version and stats answered (memcached has no authentication in its text protocol)",
        f"{items} item(s) cached, {stats.get('bytes', '?')} bytes"], {"stats": stats})


# -- which probes, in which order -----------------------------------------------------------------------

PORT_HINTS: dict[int, str] = {8123: "http", 8443: "https", 9000: "clickhouse", 9440: "clickhouse-tls",
                              6379: "redis", 5432: "postgresql", 9200: "http", 27017: "mongodb",
                              11211: "memcached", 5984: "http"}
ORDER = ("http", "redis", "memcached", "clickhouse", "postgresql", "mongodb")  # cheapest to refuse first
TLS_FIRST = {"https": "http", "clickhouse-tls": "clickhouse"}


def plan(port: int) -> list[tuple[str, bool]]:
    """The probes for a port, as (protocol, tls): the port's usual protocol first, then the others."""
    hint = PORT_HINTS.get(port)
    steps: list[tuple[str, bool]] = []
    if hint in TLS_FIRST:
        steps.append((TLS_FIRST[hint], True))
        hint = TLS_FIRST[hint]
    if hint:
        steps.append((hint, False))
    steps += [(p, False) for p in ORDER if p != hint]
    return steps


def runner(protocol: str, *, tls: bool, timeout: float, pg_user: str) -> Probe:
    if protocol == "http":
        async def run_http(conn: Conn, host: str, port: int) -> Identified | None:
            return await probe_http(conn, host, port, tls=tls, timeout=timeout)
        return run_http
    if protocol == "postgresql":
        async def run_pg(conn: Conn, host: str, port: int) -> Identified | None:
            return await probe_postgres(conn, host, port, user=pg_user)
        return run_pg
    table: dict[str, Probe] = {"redis": probe_redis, "clickhouse": probe_clickhouse_native,
                               "mongodb": probe_mongodb, "memcached": probe_memcached}
    return table[protocol]


async def confirm_clickhouse_native(ident: Identified, host: str, port: int, timeout: float, tls: bool) -> None:
    """A Hello accepted with no password: confirm with ``SHOW DATABASES`` (driver, readonly=1) in a thread."""
    try:
        names = await asyncio.wait_for(asyncio.to_thread(clickhouse_harmless_read, host, port, timeout,
                                                         secure=tls), timeout * 2)
    except Exception as exc:  # the driver's errors are many; any failure means "not confirmed"
        text = str(exc).split("Stack trace", 1)[0]
        ident.verdict = RESTRICTED
        ident.evidence.append(f"SHOW DATABASES failed: {printable(' '.join(text.split()), 160)}")
        return
    ident.evidence.append(f"SHOW DATABASES: {_names(names)}")
    ident.details["databases"] = names
