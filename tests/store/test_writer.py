from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from redline.store import open_audit_store
from redline.store import writer as writer_mod
from redline.store.base import AuditEvent, GroupBy, UsageRow
from redline.store.writer import AuditWriter

from .conftest import T0, event


class SpyStore:
    """Records batches; can be told to fail the next N writes or to be slow."""

    def __init__(self, fail: int = 0, delay: float = 0.0) -> None:
        self.batches: list[list[AuditEvent]] = []
        self.fail = fail
        self.delay = delay
        self.threads: set[int] = set()

    def write(self, events: Sequence[AuditEvent]) -> None:
        self.threads.add(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        if self.fail > 0:
            self.fail -= 1
            raise OSError("disk on fire")
        self.batches.append(list(events))

    @property
    def written(self) -> list[AuditEvent]:
        return [e for b in self.batches for e in b]

    def events(self, since: datetime, until: datetime | None = None, *, limit: int | None = None,
               team: str | None = None, action: str | None = None) -> Iterator[AuditEvent]:
        return iter(self.written)

    def usage(self, since: datetime, by: GroupBy, *, until: datetime | None = None) -> list[UsageRow]:
        return []

    def spend(self, since: datetime, *, key_id: str | None = None, team: str | None = None) -> float:
        return 0.0

    def purge(self, before: datetime) -> int:
        return 0

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_mod, "RETRY_DELAYS", (0.01, 0.01, 0.01))
    monkeypatch.setattr(writer_mod, "RUNNING_RETRY_DELAY", 0.05)


def test_batches_and_flush_on_close() -> None:
    store = SpyStore()

    async def main() -> None:
        w = AuditWriter(store, batch_size=100, flush_interval=0.05)
        w.start()
        for i in range(1050):
            assert w.submit(event(i))
        await w.aclose()
        st = w.stats()
        assert st.submitted == st.written == 1050 and st.queued == 0 and st.dropped == 0

    asyncio.run(main())
    assert [e.request_id for e in store.written] == [f"req-{i}" for i in range(1050)]
    assert max(len(b) for b in store.batches) <= 100
    assert len(store.batches) >= 11
    assert threading.get_ident() not in store.threads  # writes happen off the event loop thread


def test_event_submitted_right_before_close_is_written(tmp_path: Path) -> None:
    store = open_audit_store(str(tmp_path / "a.db"))

    async def main() -> None:
        w = AuditWriter(store, batch_size=500, flush_interval=10.0)  # the timer never fires by itself
        w.start()
        w.submit(event(1))
        await asyncio.sleep(0)
        w.submit(event(2))
        await w.aclose()

    asyncio.run(main())
    assert [e.request_id for e in store.events(T0)] == ["req-1", "req-2"]
    store.close()


def test_many_events_to_sqlite(tmp_path: Path) -> None:
    store = open_audit_store(str(tmp_path / "a.db"))
    n = 20_000

    async def main() -> list[float]:
        w = AuditWriter(store)
        w.start()
        lat = []
        for i in range(n):
            t = time.perf_counter()
            w.submit(event(i, ts=T0 + timedelta(microseconds=i)))
            lat.append(time.perf_counter() - t)
            if i % 100 == 0:
                await asyncio.sleep(0)  # let the writer run, as a server would between requests
        await w.aclose()
        return sorted(lat)

    lat = asyncio.run(main())
    assert sum(r.requests for r in store.usage(T0, "team")) == n
    # submit never waits for the database: microseconds (the rare outlier is a GC pause or a GIL switch)
    assert lat[n // 2] < 1e-4 and lat[int(n * 0.99)] < 5e-3
    store.close()


def test_timer_flushes_a_partial_batch() -> None:
    store = SpyStore()

    async def main() -> None:
        w = AuditWriter(store, batch_size=1000, flush_interval=0.02)
        w.start()
        w.submit(event(1))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if store.written:
                break
        assert len(store.written) == 1
        await w.aclose()

    asyncio.run(main())


def test_flush_waits_for_everything_submitted() -> None:
    store = SpyStore(delay=0.01)

    async def main() -> None:
        async with AuditWriter(store, batch_size=10, flush_interval=5.0) as w:
            for i in range(35):
                w.submit(event(i))
            await w.flush()
            assert len(store.written) == 35

    asyncio.run(main())


def test_write_failures_are_retried(caplog: pytest.LogCaptureFixture) -> None:
    store = SpyStore(fail=2)

    async def main() -> AuditWriter:
        w = AuditWriter(store, batch_size=10, flush_interval=0.01)
        w.start()
        for i in range(5):
            w.submit(event(i))
        await w.aclose()
        return w

    with caplog.at_level(logging.WARNING, logger="redline.audit"):
        w = asyncio.run(main())
    assert len(store.written) == 5
    assert w.stats().write_errors == 2
    assert "disk on fire" in caplog.text and "retrying" in caplog.text


def test_a_long_outage_keeps_the_events_in_order() -> None:
    store = SpyStore(fail=9)  # more failures than one round of retries

    async def main() -> None:
        w = AuditWriter(store, batch_size=4, flush_interval=0.01)
        w.start()
        for i in range(10):
            w.submit(event(i))
        await asyncio.sleep(0.5)
        await w.aclose()

    asyncio.run(main())
    assert [e.request_id for e in store.written] == [f"req-{i}" for i in range(10)]


def test_store_down_at_shutdown_spills_to_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SpyStore(fail=10**9)
    spill = tmp_path / "spill.jsonl"

    async def main() -> AuditWriter:
        w = AuditWriter(store, batch_size=5, flush_interval=0.01, spill_path=spill)
        w.start()
        for i in range(12):
            w.submit(event(i))
        await w.aclose()
        return w

    with caplog.at_level(logging.ERROR, logger="redline.audit"):
        w = asyncio.run(main())
    lines = spill.read_text().splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == [f"req-{i}" for i in range(12)]
    assert w.stats().spilled == 12 and w.stats().lost == 0
    assert "spill" in caplog.text or "appended" in caplog.text


def test_store_down_without_spill_reports_the_loss(caplog: pytest.LogCaptureFixture) -> None:
    store = SpyStore(fail=10**9)

    async def main() -> AuditWriter:
        w = AuditWriter(store, batch_size=5, flush_interval=0.01)
        w.start()
        for i in range(3):
            w.submit(event(i))
        await w.aclose()
        return w

    with caplog.at_level(logging.ERROR, logger="redline.audit"):
        w = asyncio.run(main())
    assert w.stats().lost == 3
    assert "3 audit event(s) could not be written" in caplog.text


def test_full_queue_refuses_loudly(caplog: pytest.LogCaptureFixture) -> None:
    store = SpyStore(delay=0.2)

    async def main() -> AuditWriter:
        w = AuditWriter(store, batch_size=5, flush_interval=0.01, max_queue=10)
        w.start()
        results = [w.submit(event(i)) for i in range(15)]
        assert results == [True] * 10 + [False] * 5
        assert w.saturated
        await w.aclose()
        return w

    with caplog.at_level(logging.WARNING, logger="redline.audit"):
        w = asyncio.run(main())
    st = w.stats()
    assert st.dropped == 5 and st.written == 10
    assert "audit queue full" in caplog.text


def test_submit_after_close_is_refused() -> None:
    store = SpyStore()

    async def main() -> AuditWriter:
        w = AuditWriter(store)
        w.start()
        await w.aclose()
        await w.aclose()  # idempotent
        assert w.submit(event(1)) is False
        return w

    assert asyncio.run(main()).stats().dropped == 1


def test_submit_from_other_threads() -> None:
    store = SpyStore()

    async def main() -> None:
        w = AuditWriter(store, batch_size=50, flush_interval=0.01)
        w.start()

        def worker(k: int) -> None:
            for i in range(100):
                w.submit(event(k * 100 + i))

        await asyncio.gather(*(asyncio.to_thread(worker, k) for k in range(4)))
        await w.aclose()

    asyncio.run(main())
    assert len({e.request_id for e in store.written}) == 400


def test_events_submitted_before_the_loop_started_are_kept() -> None:
    store = SpyStore()
    w = AuditWriter(store)
    w.submit(event(1))  # no running loop yet

    async def main() -> None:
        await w.aclose()

    asyncio.run(main())
    assert len(store.written) == 1
