"""Asynchronous, batched audit writing: the request path only appends to a queue.

Usage in the gateway::

    writer = AuditWriter(store)          # inside the running event loop (e.g. the app's lifespan startup)
    writer.start()
    ...
    writer.submit(event)                 # on the request path: never blocks, never awaits
    ...
    await writer.aclose()                # lifespan shutdown (uvicorn runs it on SIGTERM/SIGINT): flushes all

Overflow policy (when the store cannot keep up and ``max_queue`` events are waiting): the new event is
*refused*, ``submit`` returns False, the ``dropped`` counter goes up (export it as a metric), and a warning
is logged at most every 10 s with the running count. Nothing is dropped silently. A gateway that must not
serve a request it cannot audit checks :attr:`AuditWriter.saturated` before forwarding and answers 503
(fail closed); the default is to keep serving (fail open), because the queue is large (100 000 events,
roughly 50-100 MB) and only fills when the store is down or far too slow.

Write failures: a batch is retried with backoff (0.1 s, 0.5 s, 2 s, then every 5 s while the writer runs);
the batch stays at the head of the queue, so order is kept and nothing accepted is lost. On ``aclose`` the
writer tries to write everything; batches that still fail after the retries are appended as JSON lines
to ``spill_path`` when given (events carry no raw secrets, so that file is as safe as the store), and
otherwise reported in the log with their count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from redline.store.base import AuditEvent, AuditStore

log = logging.getLogger("redline.audit")

RETRY_DELAYS = (0.1, 0.5, 2.0)
RUNNING_RETRY_DELAY = 5.0
WARN_EVERY = 10.0


@dataclass
class WriterStats:
    submitted: int = 0  # accepted into the queue
    written: int = 0  # persisted by the store
    dropped: int = 0  # refused because the queue was full
    spilled: int = 0  # written to the spill file on close because the store kept failing
    lost: int = 0  # could not be written anywhere on close
    batches: int = 0
    write_errors: int = 0  # failed store.write attempts
    queued: int = 0  # waiting right now


class AuditWriter:
    def __init__(self, store: AuditStore, *, batch_size: int = 200, flush_interval: float = 0.5,
                 max_queue: int = 100_000, spill_path: str | Path | None = None) -> None:
        if batch_size < 1 or max_queue < 1 or flush_interval <= 0:
            raise ValueError("batch_size and max_queue must be >= 1 and flush_interval > 0")
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.spill_path = Path(spill_path) if spill_path else None
        self._queue: deque[AuditEvent] = deque()
        self._lock = threading.Lock()  # submit may come from worker threads too
        self._stats = WriterStats()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._closed = False
        self._in_flight = 0
        self._last_failed = False
        self._urgent = False  # flush() asked: write what is queued without waiting for a full batch
        self._idle: asyncio.Event | None = None
        self._last_warn = 0.0
        self._dropped_since_warn = 0

    # ------------------------------------------------------------------ request path

    def start(self) -> None:
        """Start the background task in the running loop (``submit`` also starts it lazily)."""
        if self._task is not None:
            return
        if self._closed:
            raise RuntimeError("the audit writer is closed")
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="redline-audit-writer")

    @property
    def saturated(self) -> bool:
        """True when the queue is full: the next ``submit`` would be refused."""
        return len(self._queue) >= self.max_queue

    def submit(self, event: AuditEvent) -> bool:
        """Queue an event; True when accepted. Never blocks. Safe from the loop thread and other threads."""
        with self._lock:
            if self._closed:
                self._stats.dropped += 1
                log.error("audit event submitted after the writer was closed: dropped (request_id=%s)",
                          event.request_id)
                return False
            if len(self._queue) >= self.max_queue:
                self._stats.dropped += 1
                self._dropped_since_warn += 1
                now = time.monotonic()
                if now - self._last_warn >= WARN_EVERY:
                    log.warning("audit queue full (%d events waiting): %d event(s) refused since the last "
                                "warning, %d in total; the audit store is not keeping up",
                                len(self._queue), self._dropped_since_warn, self._stats.dropped)
                    self._last_warn = now
                    self._dropped_since_warn = 0
                return False
            self._queue.append(event)
            self._stats.submitted += 1
            n = len(self._queue)
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: the events wait for start()
                self.start()
        if n >= self.batch_size:
            self._poke()
        return True

    def stats(self) -> WriterStats:
        with self._lock:
            s = WriterStats(**vars(self._stats))
            s.queued = len(self._queue)
        return s

    # ------------------------------------------------------------------ lifecycle

    async def flush(self) -> None:
        """Wait until everything submitted so far is written (or failed its retries)."""
        if self._task is None:
            if self._queue:
                self.start()
            else:
                return
        assert self._idle is not None
        while self._queue or self._in_flight:
            self._idle.clear()
            self._urgent = True
            self._poke()
            await self._idle.wait()
            if self._last_failed or (self._task is not None and self._task.done()):
                break

    async def aclose(self) -> None:
        """Flush everything and stop. Idempotent. Call on shutdown (SIGTERM)."""
        if self._closed:
            return
        self._closing = True
        if self._task is None and self._queue:
            self.start()
        if self._task is not None:
            self._poke()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with self._lock:
            self._closed = True
            rest = list(self._queue)
            self._queue.clear()
        if rest:  # only when the store kept failing
            self._give_up(rest)

    async def __aenter__(self) -> AuditWriter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ background

    def _poke(self) -> None:
        if self._wake is None or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def _take(self) -> list[AuditEvent]:
        with self._lock:
            n = min(self.batch_size, len(self._queue))
            return [self._queue[i] for i in range(n)]

    def _done(self, n: int) -> None:
        with self._lock:
            for _ in range(n):
                self._queue.popleft()
            self._stats.written += n
            self._stats.batches += 1

    async def _run(self) -> None:
        assert self._wake is not None and self._idle is not None
        while True:
            if not self._queue:
                self._urgent = False
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                continue
            if len(self._queue) < self.batch_size and not self._closing and not self._urgent:
                # Gather a fuller batch unless asked to flush now.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            batch = self._take()
            if not batch:
                continue
            self._in_flight = len(batch)
            ok = await self._write_with_retries(batch)
            self._in_flight = 0
            self._last_failed = not ok
            if ok:
                self._done(len(batch))
            elif self._closing:
                return  # aclose hands what is left to _give_up
            else:
                # Keep the batch at the head and try again later; the bounded queue protects memory.
                self._idle.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RUNNING_RETRY_DELAY)

    async def _write_with_retries(self, batch: Sequence[AuditEvent]) -> bool:
        for attempt in range(len(RETRY_DELAYS) + 1):
            try:
                await asyncio.to_thread(self.store.write, batch)
                return True
            except Exception as exc:
                self._stats.write_errors += 1
                last = attempt == len(RETRY_DELAYS)
                log.warning("audit store write of %d event(s) failed (attempt %d/%d): %s: %s%s", len(batch),
                            attempt + 1, len(RETRY_DELAYS) + 1, type(exc).__name__, exc,
                            "" if last else f"; retrying in {RETRY_DELAYS[attempt]}s")
                if not last:
                    await asyncio.sleep(RETRY_DELAYS[attempt])
        return False

    def _give_up(self, events: list[AuditEvent]) -> None:
        if self.spill_path is not None:
            try:
                with self.spill_path.open("a", encoding="utf-8") as fh:
                    for e in events:
                        fh.write(json.dumps(e.to_dict(), separators=(",", ":")) + "\n")
                self._stats.spilled += len(events)
                log.error("audit store unavailable at shutdown: %d event(s) appended to %s "
                          "(import them later with `redline audit import`)", len(events), self.spill_path)
                return
            except OSError as exc:
                log.error("cannot write audit spill file %s: %s", self.spill_path, exc)
        self._stats.lost += len(events)
        log.error("audit store unavailable at shutdown: %d audit event(s) could not be written", len(events))
