"""Bounded connections: every read has a byte cap and runs under the probe's deadline; never an unbounded read."""

from __future__ import annotations

import asyncio
import ssl
import struct
import time

MAX_REPLY = 64 * 1024  # bytes a probe reads from one connection at most (inspection raises it per call)


class ProtocolError(Exception):
    """The peer does not speak the protocol we tried (or speaks it wrongly)."""


class CapExceeded(ProtocolError):
    """The peer sent more than the byte cap allows."""


class RateLimiter:
    """Token bucket for connection attempts: ``rate`` per second, bursts of up to ``rate`` (at least 1)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(1.0, rate)
        self.cap = self.tokens
        self.last = time.monotonic()
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if self.rate <= 0:
            return
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.cap, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


def _client_tls() -> ssl.SSLContext:
    # Fingerprinting our own hosts: certificates are not verified and nothing secret is ever sent.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Conn:
    """One TCP (or TLS) connection with a byte budget; ``bytes_read`` counts what the peer sent us."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cap: int = MAX_REPLY) -> None:
        self.reader = reader
        self.writer = writer
        self.cap = cap
        self.bytes_read = 0
        self.first: bytes = b""  # the first bytes received, for evidence

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float, tls: bool = False, cap: int = MAX_REPLY) -> Conn:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=_client_tls() if tls else None, limit=cap,
                                    server_hostname=host if tls else None),
            timeout)
        return cls(reader, writer, cap)

    def _account(self, data: bytes) -> bytes:
        self.bytes_read += len(data)
        if len(self.first) < 64:
            self.first += data[: 64 - len(self.first)]
        if self.bytes_read > self.cap:
            raise CapExceeded(f"more than {self.cap:,} bytes")
        return data

    def room(self) -> int:
        return max(0, self.cap - self.bytes_read)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, n: int = 4096) -> bytes:
        """Up to ``n`` bytes (``b""`` at end of stream)."""
        if self.room() <= 0:
            raise CapExceeded(f"more than {self.cap:,} bytes")
        return self._account(await self.reader.read(min(n, self.room() + 1)))

    async def exactly(self, n: int) -> bytes:
        if n > self.room():
            raise CapExceeded(f"a {n:,}-byte message is over the {self.cap:,}-byte cap")
        try:
            return self._account(await self.reader.readexactly(n))
        except asyncio.IncompleteReadError as exc:
            self._account(exc.partial)
            raise ProtocolError("connection closed mid-message") from None

    async def line(self, limit: int = 1024) -> bytes:
        """One line ending in ``\\n`` (kept), at most ``limit`` bytes."""
        try:
            data = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            self._account(exc.partial)
            raise ProtocolError("connection closed mid-line") from None
        except asyncio.LimitOverrunError as exc:
            self.bytes_read += exc.consumed  # buffered (at most the stream limit), never returned to us
            raise ProtocolError("line too long") from None
        self._account(data)
        if len(data) > limit:
            raise ProtocolError("line too long")
        return data

    async def until_eof(self, limit: int) -> bytes:
        buf = bytearray()
        while len(buf) < limit:
            chunk = await self.recv(min(65536, limit - len(buf)))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    async def varint(self) -> int:
        shift = value = 0
        for _ in range(10):
            b = (await self.exactly(1))[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
        raise ProtocolError("varint too long")

    async def ch_string(self, limit: int = 16384) -> bytes:
        n = await self.varint()
        if n > limit:
            raise ProtocolError(f"string of {n:,} bytes")
        return await self.exactly(n)

    async def u32le(self) -> int:
        value: int = struct.unpack("<I", await self.exactly(4))[0]
        return value

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 1)
        except (TimeoutError, OSError, ssl.SSLError):
            pass
