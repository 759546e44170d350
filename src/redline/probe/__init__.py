"""``redline probe``: find exposed databases on hosts you own before someone else does.

For every endpoint (address x port) the probe connects and speaks each protocol's harmless opening, the port's
usual protocol first, until one answers: ClickHouse HTTP and native, Redis, PostgreSQL, Elasticsearch/OpenSearch,
MongoDB, Memcached, CouchDB, or an HTTP admin page. The verdict is ``open`` only when a harmless read worked
without credentials. Bounds: ``concurrency`` endpoints at once, ``rate`` new connections a second, ``timeout``
seconds per connection, ``ENDPOINT_BUDGET`` timeouts per endpoint, ``MAX_REPLY`` bytes read per connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redline.probe.protocols import (
    AUTH,
    CLOSED,
    OPEN,
    OTHER,
    RESTRICTED,
    TIMEOUT,
    Identified,
    confirm_clickhouse_native,
    plan,
    printable,
    runner,
)
from redline.probe.targets import Endpoint
from redline.probe.wire import MAX_REPLY, Conn, ProtocolError, RateLimiter

__all__ = ["ENDPOINT_BUDGET", "Options", "Result", "probe", "probe_endpoint"]

ENDPOINT_BUDGET = 4  # an endpoint takes at most this many --timeout periods (plus confirmation reads)
SEVERITY_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1, "info": 0, "none": -1}

FIXES: dict[str, str] = {
    "clickhouse": "Give the default user a password (users.xml password_sha256_hex) or limit its <networks>, "
                  "and keep ports 8123/9000 off public networks.",
    "redis": "Set requirepass (or ACL users), bind to a private interface and keep protected-mode on.",
    "postgresql": "Replace 'trust' in pg_hba.conf with scram-sha-256 and narrow listen_addresses and host ranges.",
    "elasticsearch": "Enable security (xpack.security.enabled: true) with passwords and TLS, or bind privately.",
    "opensearch": "Enable the security plugin with passwords and TLS, or bind to a private interface.",
    "mongodb": "Enable authorization (security.authorization: enabled) and set net.bindIp to private addresses.",
    "memcached": "Bind memcached to 127.0.0.1 or a private address (-l), disable UDP (-U 0), or use SASL.",
    "couchdb": "Create an admin user, set require_valid_user = true and bind to a private interface.",
    "http-admin": "Put the admin page behind authentication or a VPN.",
}


def service_family(service: str | None) -> str:
    return (service or "").split("-")[0] if service and not service.startswith("http") else (service or "")


def fix_for(service: str | None, verdict: str) -> str:
    if verdict == OPEN:
        return FIXES.get(service_family(service), FIXES.get(service or "", "Require authentication."))
    if verdict == AUTH:
        return f"Authentication is on; still keep {service or 'the service'} off public networks, strong passwords."
    if verdict == RESTRICTED:
        return "The server refused this client; set a password rather than relying on that alone."
    return ""


@dataclass
class Options:
    timeout: float = 3.0
    concurrency: int = 32
    rate: float = 100.0
    pg_user: str = "postgres"
    cap: int = MAX_REPLY


@dataclass
class Result:
    host: str
    port: int
    verdict: str
    service: str | None = None
    severity: str = "none"
    version: str | None = None
    tls: bool = False
    evidence: list[str] = field(default_factory=list)
    fix: str = ""
    seconds: float = 0.0
    bytes_read: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    inspect: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return Endpoint(self.host, self.port).label

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "endpoint": self.label, "host": self.host, "port": self.port, "service": self.service,
            "verdict": self.verdict, "severity": self.severity, "version": self.version, "tls": self.tls,
            "evidence": self.evidence, "fix": self.fix, "seconds": round(self.seconds, 3),
            "bytes_read": self.bytes_read,
        }
        if self.inspect is not None:
            d["inspect"] = self.inspect
        return d


def _severity(ident: Identified) -> str:
    if ident.verdict == OPEN:
        return "medium" if ident.service == "http-admin" else "high"
    if ident.verdict in (AUTH, RESTRICTED):
        return "low"
    return "none"


async def probe_endpoint(ep: Endpoint, opts: Options, limiter: RateLimiter | None = None) -> Result:
    started = time.monotonic()
    deadline = started + opts.timeout * ENDPOINT_BUDGET
    total_bytes = 0
    timeouts = 0
    attempts = 0
    notes: list[str] = []
    first_bytes = b""
    result: Result | None = None
    fallback: Identified | None = None  # a plain HTTP server: reported only when no other protocol answers
    for protocol, tls in plan(ep.port):
        left = deadline - time.monotonic()
        if left <= 0.05:
            notes.append("endpoint time budget used up")
            break
        if limiter:
            await limiter.wait()
        attempts += 1
        conn: Conn | None = None
        try:
            async with asyncio.timeout(min(opts.timeout, left)):
                conn = await Conn.open(ep.host, ep.port, timeout=opts.timeout, tls=tls, cap=opts.cap)
                ident = await runner(protocol, tls=tls, timeout=opts.timeout, pg_user=opts.pg_user)(
                    conn, ep.host, ep.port)
        except ConnectionRefusedError:
            if attempts == 1:
                result = Result(ep.host, ep.port, CLOSED, evidence=["connection refused"])
                break
            continue
        except TimeoutError:
            if conn is None and attempts == 1:
                result = Result(ep.host, ep.port, TIMEOUT, evidence=[f"no TCP connection within {opts.timeout:g} s"])
                break
            timeouts += 1
            continue
        except (ProtocolError, OSError, ssl.SSLError, EOFError, UnicodeError, ValueError) as exc:
            if not isinstance(exc, ssl.SSLError) and str(exc):
                notes.append(f"{protocol}: {printable(str(exc), 60)}")
            continue
        finally:
            if conn is not None:
                total_bytes += conn.bytes_read
                if not first_bytes:
                    first_bytes = conn.first
                await conn.close()
        if ident is None:
            continue
        if ident.verdict == OTHER:
            fallback = fallback or ident
            continue
        if ident.service == "clickhouse-native" and ident.verdict == OPEN:
            await confirm_clickhouse_native(ident, ep.host, ep.port, opts.timeout, tls)
        result = Result(ep.host, ep.port, ident.verdict, ident.service, _severity(ident), ident.version, tls,
                        ident.evidence, fix_for(ident.service, ident.verdict), details=ident.details)
        break
    if result is None and fallback is not None:
        result = Result(ep.host, ep.port, OTHER, fallback.service, "none", fallback.version, False,
                        fallback.evidence)
    if result is None:
        if total_bytes == 0 and timeouts and timeouts == attempts:
            result = Result(ep.host, ep.port, TIMEOUT,
                            evidence=[f"connected, but no reply to any probe within {opts.timeout:g} s"])
        elif total_bytes == 0:
            result = Result(ep.host, ep.port, OTHER, evidence=["connected, but the server closed or reset "
                                                               "every probe without a reply"])
        else:
            result = Result(ep.host, ep.port, OTHER,
                            evidence=[f"no known protocol; first bytes: {first_bytes[:32]!r}"[:120]])
    result.seconds = time.monotonic() - started
    result.bytes_read = total_bytes
    return result


async def probe(endpoints: Sequence[Endpoint], opts: Options,
                on_result: Callable[[Result], None] | None = None) -> list[Result]:
    """Probe all endpoints (bounded concurrency and rate); results in the order of ``endpoints``."""
    sem = asyncio.Semaphore(max(1, opts.concurrency))
    limiter = RateLimiter(opts.rate)

    async def one(ep: Endpoint) -> Result:
        async with sem:
            res = await probe_endpoint(ep, opts, limiter)
        if on_result:
            on_result(res)
        return res

    return list(await asyncio.gather(*(one(ep) for ep in endpoints)))


def any_open(results: Sequence[Result]) -> bool:
    return any(r.verdict == OPEN for r in results)


VERDICTS = (OPEN, AUTH, RESTRICTED, OTHER, CLOSED, TIMEOUT)
