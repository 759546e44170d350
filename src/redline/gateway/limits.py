"""Requests-per-minute limits and monthly budgets, per virtual key and per team.

One :class:`Limiter` per gateway process::

    limiter = Limiter(store, team_rpm={"research": 600}, team_budget_usd={"research": 500.0})
    decision = await limiter.check(key_record)       # before forwarding
    if not decision.allowed:
        return JSONResponse(decision.error_body(), status_code=decision.status, headers=decision.headers())
    ...
    limiter.record_spend(key_record, cost_usd)       # after the upstream answered (cost known)

* **rpm**: an exact sliding window of 60 s per key and per team (timestamps of admitted requests). A refusal
  says when the oldest request in the window leaves it: ``Retry-After`` (whole seconds, rounded up, >= 1).
  Refused requests do not count against the window. State is in process memory: with N gateway replicas
  the effective limit is up to N times the configured one.
* **budgets**: USD per calendar month (UTC) per key (``KeyRecord.budget_usd``) and per team. Spend is read
  from ``AuditStore.spend(since=start of month)`` at most every ``cache_seconds`` (5 s) per key/team, in a
  worker thread; between reads the limiter adds the cost of requests it has seen (``record_spend``).
  A request is refused once spend >= budget (a request that starts under budget may end a little over
  it). Refusal: HTTP 429, OpenAI-style error with ``code: "budget_exceeded"``, ``Retry-After`` = seconds
  until the next month starts. 429 rather than 402 because OpenAI SDKs treat 429 as a quota/rate error
  they know how to surface, and ``insufficient_quota`` is what OpenAI itself returns for an exhausted quota.
  If the store cannot be read, the last known spend is used (fail open, logged) — budgets are cost
  control, not a security boundary.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from redline.store.base import AuditStore, KeyRecord

log = logging.getLogger("redline.limits")

WINDOW = 60.0

Reason = Literal["ok", "rpm_key", "rpm_team", "budget_key", "budget_team", "model_not_allowed"]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: Reason = "ok"
    status: int = 200
    code: str | None = None  # OpenAI error code
    message: str = ""
    retry_after: int | None = None  # whole seconds for the Retry-After header
    limit: float | None = None  # the rpm or budget that applied
    remaining: float | None = None  # requests left in the window, or USD left in the month

    def headers(self) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.retry_after is not None:
            h["Retry-After"] = str(self.retry_after)
        if self.reason.startswith("rpm") and self.limit is not None:
            h["X-RateLimit-Limit-Requests"] = str(int(self.limit))
            h["X-RateLimit-Remaining-Requests"] = "0"
        return h

    def error_body(self) -> dict[str, Any]:
        """The OpenAI-compatible error object for a refusal."""
        etype = {"rpm_key": "rate_limit_exceeded", "rpm_team": "rate_limit_exceeded",
                 "budget_key": "insufficient_quota", "budget_team": "insufficient_quota",
                 "model_not_allowed": "invalid_request_error"}.get(self.reason, "invalid_request_error")
        return {"error": {"message": self.message, "type": etype, "param": None, "code": self.code}}


ALLOWED = Decision(True)


def model_allowed(record: KeyRecord, model: str) -> bool:
    """Whether the key may use ``model``: ``models`` entries match exactly, or as a prefix ending in ``*``
    (``gpt-4o*``), or as a prefix before ``-``/``:``/``@`` (``claude-sonnet-4`` allows its dated variants)."""
    if record.models is None:
        return True
    m = model.lower()
    for allowed in record.models:
        a = allowed.lower()
        if a == m or a == "*":
            return True
        if a.endswith("*") and m.startswith(a[:-1]):
            return True
        if m.startswith(a) and m[len(a)] in "-:@":
            return True
    return False


def month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime | None = None) -> datetime:
    start = month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


class RateLimiter:
    """Exact sliding-window request counter keyed by any string (``key:rk_…``, ``team:research``)."""

    def __init__(self, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def _prune(self, q: deque[float], now: float) -> None:
        edge = now - self.window
        while q and q[0] <= edge:
            q.popleft()

    def check(self, limits: Iterable[tuple[str, int | None]]) -> tuple[str | None, float, int]:
        """Admit one request against every ``(name, rpm)`` (None = unlimited) or none of them.

        Returns ``(None, 0, remaining)`` when admitted (remaining = fewest requests left in any window), or
        ``(name, retry_after_seconds, 0)`` for the first limit that refuses."""
        now = self.clock()
        with self._lock:
            self._sweep(now)
            active = [(n, r) for n, r in limits if r is not None]
            remaining = math.inf
            for name, rpm in active:
                q = self._hits.setdefault(name, deque())
                self._prune(q, now)
                if len(q) >= rpm:
                    # The request that frees a slot is the (len-rpm+1)-th oldest.
                    oldest = q[len(q) - rpm]
                    return name, max(0.0, oldest + self.window - now), 0
                remaining = min(remaining, rpm - len(q) - 1)
            for name, _ in active:
                self._hits[name].append(now)
        return None, 0.0, int(remaining) if remaining != math.inf else -1

    def _sweep(self, now: float) -> None:
        """Forget idle names now and then, so memory follows the active keys."""
        if now - self._last_sweep < self.window:
            return
        self._last_sweep = now
        for name in [n for n, q in self._hits.items() if not q or q[-1] <= now - self.window]:
            del self._hits[name]


@dataclass
class _Spend:
    value: float = 0.0
    fetched: float = -math.inf
    month: datetime | None = None
    lock: asyncio.Lock | None = field(default=None, repr=False)


class Limiter:
    def __init__(self, store: AuditStore | None, *, team_rpm: dict[str, int] | None = None,
                 team_budget_usd: dict[str, float] | None = None, default_key_rpm: int | None = None,
                 cache_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.team_rpm = dict(team_rpm or {})
        self.team_budget_usd = dict(team_budget_usd or {})
        self.default_key_rpm = default_key_rpm
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.now = now
        self.rate = RateLimiter(clock=clock)
        self._spend: dict[str, _Spend] = {}

    # ------------------------------------------------------------------ budgets

    async def spend(self, *, key_id: str | None = None, team: str | None = None) -> float:
        """Month-to-date spend for a key or a team, from a cache refreshed every ``cache_seconds``."""
        name = f"key:{key_id}" if key_id is not None else f"team:{team}"
        entry = self._spend.setdefault(name, _Spend())
        month = month_start(self.now())
        if entry.month != month:  # a new month starts from zero
            entry.value, entry.fetched, entry.month = 0.0, -math.inf, month
        if self.store is None or self.clock() - entry.fetched < self.cache_seconds:
            return entry.value
        if entry.lock is None:
            entry.lock = asyncio.Lock()
        async with entry.lock:  # one refresh at a time per key/team
            if self.clock() - entry.fetched < self.cache_seconds:
                return entry.value
            store = self.store
            try:
                value = await asyncio.to_thread(store.spend, month, key_id=key_id, team=team)
            except Exception as exc:
                log.warning("cannot read spend for %s from the audit store (%s: %s); using %.4f USD",
                            name, type(exc).__name__, exc, entry.value)
                entry.fetched = self.clock()
                return entry.value
            entry.value, entry.fetched = value, self.clock()
            return entry.value

    def record_spend(self, record: KeyRecord | None, cost_usd: float) -> None:
        """Add the cost of a finished request to the cached spend (until the next refresh from the store)."""
        if cost_usd <= 0 or record is None:
            return
        for name in (f"key:{record.key_id}", f"team:{record.team}"):
            entry = self._spend.get(name)
            if entry is not None:
                entry.value += cost_usd

    def _budget_refusal(self, who: str, spent: float, budget: float) -> Decision:
        now = self.now()
        retry = max(1, math.ceil((next_month_start(now) - now).total_seconds()))
        return Decision(False, "budget_key" if who == "key" else "budget_team", 429, "budget_exceeded",
                        f"The monthly budget of this {who} is used up ({spent:.2f} of {budget:.2f} USD); "
                        f"it resets on {next_month_start(now):%Y-%m-%d} UTC.",
                        retry_after=retry, limit=budget, remaining=0.0)

    # ------------------------------------------------------------------ the check

    async def check(self, record: KeyRecord, model: str | None = None) -> Decision:
        """Model allow-list, then budgets, then rpm (only an admitted request takes an rpm slot)."""
        if model is not None and not model_allowed(record, model):
            return Decision(False, "model_not_allowed", 403, "model_not_allowed",
                            f"This key may not use model {model[:100]!r}.")
        if record.budget_usd is not None:
            spent = await self.spend(key_id=record.key_id)
            if spent >= record.budget_usd:
                return self._budget_refusal("key", spent, record.budget_usd)
        team_budget = self.team_budget_usd.get(record.team)
        if team_budget is not None:
            spent = await self.spend(team=record.team)
            if spent >= team_budget:
                return self._budget_refusal("team", spent, team_budget)
        key_rpm = record.rpm if record.rpm is not None else self.default_key_rpm
        team_rpm = self.team_rpm.get(record.team)
        refused, wait, _ = self.rate.check([(f"key:{record.key_id}", key_rpm), (f"team:{record.team}", team_rpm)])
        if refused is None:
            return ALLOWED
        is_key = refused.startswith("key:")
        limit = key_rpm if is_key else team_rpm
        return Decision(False, "rpm_key" if is_key else "rpm_team", 429, "rate_limit_exceeded",
                        f"Rate limit of {limit} requests per minute for this {'key' if is_key else 'team'} "
                        f"reached; retry in {max(1, math.ceil(wait))} s.",
                        retry_after=max(1, math.ceil(wait)), limit=limit, remaining=0)
