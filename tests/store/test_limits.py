from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest

from redline.gateway.limits import Decision, Limiter, RateLimiter, model_allowed, month_start, next_month_start
from redline.store.base import KeyRecord


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def key(key_id: str = "rk_1", team: str = "research", **kw: object) -> KeyRecord:
    return KeyRecord(key_id=key_id, team=team, user=None, name=None, created=datetime(2025, 1, 1, tzinfo=UTC),
                     **kw)  # type: ignore[arg-type]


class SpendStore:
    def __init__(self) -> None:
        self.by_key: dict[str, float] = {}
        self.by_team: dict[str, float] = {}
        self.calls = 0
        self.since: list[datetime] = []
        self.broken = False

    def spend(self, since: datetime, *, key_id: str | None = None, team: str | None = None) -> float:
        self.calls += 1
        self.since.append(since)
        if self.broken:
            raise OSError("store down")
        return self.by_key.get(key_id or "", 0.0) if key_id else self.by_team.get(team or "", 0.0)


def run(coro: Coroutine[Any, Any, Decision]) -> Decision:
    return asyncio.run(coro)


def test_sliding_window_and_retry_after() -> None:
    clock = Clock()
    rl = RateLimiter(clock=clock)
    for i in range(3):
        clock.t = 1000.0 + i * 10  # requests at 0 s, 10 s, 20 s
        assert rl.check([("k", 3)])[0] is None
    clock.t = 1030.0
    name, wait, _ = rl.check([("k", 3)])
    assert name == "k" and wait == pytest.approx(30.0)  # the request at 0 s leaves the window at 60 s
    clock.t = 1059.9
    assert rl.check([("k", 3)])[0] == "k"
    clock.t = 1060.0
    assert rl.check([("k", 3)])[0] is None  # a slot freed exactly when promised
    clock.t = 1061.0
    name, wait, _ = rl.check([("k", 3)])
    assert name == "k" and wait == pytest.approx(9.0)  # next to leave: the request at 10 s


def test_refused_requests_do_not_take_slots() -> None:
    clock = Clock()
    rl = RateLimiter(clock=clock)
    assert rl.check([("k", 1)])[0] is None
    for _ in range(100):
        clock.t += 0.5
        assert rl.check([("k", 1)])[0] == "k"
    clock.t = 1060.0
    assert rl.check([("k", 1)])[0] is None


def test_all_or_nothing_across_key_and_team() -> None:
    clock = Clock()
    rl = RateLimiter(clock=clock)
    assert rl.check([("key:a", 10), ("team:t", 2)])[0] is None
    assert rl.check([("key:b", 10), ("team:t", 2)])[0] is None
    assert rl.check([("key:a", 10), ("team:t", 2)])[0] == "team:t"
    # key:a was not charged for the refused request: 1 used of 10
    assert rl.check([("key:a", 1)])[0] == "key:a"
    assert rl.check([("key:c", None), ("team:u", None)])[0] is None  # unlimited


def test_idle_names_are_forgotten() -> None:
    clock = Clock()
    rl = RateLimiter(clock=clock)
    for i in range(100):
        rl.check([(f"k{i}", 5)])
    clock.t += 120
    rl.check([("new", 5)])
    assert set(rl._hits) == {"new"}


def test_limiter_rpm_decisions() -> None:
    clock = Clock()
    lim = Limiter(None, team_rpm={"research": 3}, clock=clock)
    a, b = key("rk_a", rpm=2), key("rk_b")
    assert run(lim.check(a)).allowed
    assert run(lim.check(a)).allowed
    d = run(lim.check(a))
    assert not d.allowed and d.status == 429 and d.reason == "rpm_key" and d.code == "rate_limit_exceeded"
    assert d.retry_after == 60 and d.headers()["Retry-After"] == "60"
    assert d.error_body()["error"]["type"] == "rate_limit_exceeded"
    assert run(lim.check(b)).allowed  # team: 3rd request
    clock.t += 15.2
    d = run(lim.check(b))
    assert d.reason == "rpm_team" and d.retry_after == 45  # ceil(60 - 15.2)
    assert "team" in d.message


def test_default_key_rpm() -> None:
    lim = Limiter(None, default_key_rpm=1, clock=Clock())
    assert run(lim.check(key())).allowed
    assert run(lim.check(key())).reason == "rpm_key"
    assert run(lim.check(key(rpm=5))).allowed  # the key's own rpm wins over the default


def test_budgets_with_cache() -> None:
    clock = Clock()
    store = SpendStore()
    now = datetime(2025, 3, 31, 23, 0, tzinfo=UTC)
    lim = Limiter(store, team_budget_usd={"research": 100.0}, clock=clock, now=lambda: now)  # type: ignore[arg-type]
    k = key(budget_usd=10.0)
    store.by_key["rk_1"] = 9.0
    store.by_team["research"] = 50.0
    assert run(lim.check(k)).allowed
    assert store.calls == 2 and store.since[0] == datetime(2025, 3, 1, tzinfo=UTC)
    assert run(lim.check(k)).allowed
    assert store.calls == 2  # cached
    lim.record_spend(k, 1.5)  # now 10.5 >= 10 without asking the store
    d = run(lim.check(k))
    assert not d.allowed and d.reason == "budget_key" and d.status == 429 and d.code == "budget_exceeded"
    assert d.retry_after == 3600  # one hour to April
    assert d.error_body()["error"]["code"] == "budget_exceeded"
    assert store.calls == 2
    # after the cache time the store's figure is used again
    store.by_key["rk_1"] = 2.0
    clock.t += 5.1
    assert run(lim.check(k)).allowed
    assert store.calls == 4


def test_team_budget() -> None:
    store = SpendStore()
    store.by_team["research"] = 100.0
    lim = Limiter(store, team_budget_usd={"research": 100.0}, clock=Clock())  # type: ignore[arg-type]
    d = run(lim.check(key()))
    assert d.reason == "budget_team" and "team" in d.message
    assert run(lim.check(key(team="ops"))).allowed


def test_budget_resets_with_the_month() -> None:
    store = SpendStore()
    store.by_key["rk_1"] = 20.0
    clock = Clock()
    now = [datetime(2025, 1, 31, 12, tzinfo=UTC)]
    lim = Limiter(store, clock=clock, now=lambda: now[0])  # type: ignore[arg-type]
    k = key(budget_usd=10.0)
    assert not run(lim.check(k)).allowed
    store.by_key["rk_1"] = 0.0  # the store's month-to-date spend in February
    now[0] = datetime(2025, 2, 1, 0, 0, 1, tzinfo=UTC)
    assert run(lim.check(k)).allowed  # new month: not the cached January figure
    assert store.since[-1] == datetime(2025, 2, 1, tzinfo=UTC)


def test_store_errors_fail_open_with_last_value(caplog: pytest.LogCaptureFixture) -> None:
    store = SpendStore()
    store.broken = True
    lim = Limiter(store, clock=Clock())  # type: ignore[arg-type]
    assert run(lim.check(key(budget_usd=1.0))).allowed
    assert "cannot read spend" in caplog.text


def test_model_allow_list() -> None:
    k = key(models=["gpt-4o*", "claude-sonnet-4", "deepseek-chat"])
    assert model_allowed(k, "gpt-4o") and model_allowed(k, "gpt-4o-mini")
    assert model_allowed(k, "claude-sonnet-4-20250514") and model_allowed(k, "deepseek-chat")
    assert not model_allowed(k, "gpt-4.1") and not model_allowed(k, "claude-sonnet-40")
    assert not model_allowed(k, "deepseek-chat2")
    assert model_allowed(key(), "anything")
    d = run(Limiter(None).check(k, "o3"))
    assert d.status == 403 and d.code == "model_not_allowed"


def test_month_helpers() -> None:
    assert month_start(datetime(2025, 12, 15, 5, tzinfo=UTC)) == datetime(2025, 12, 1, tzinfo=UTC)
    assert next_month_start(datetime(2025, 12, 15, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)
