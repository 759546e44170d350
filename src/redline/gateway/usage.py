"""The spend report behind ``redline usage``: per team, model, provider or key, with efficiency columns."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, Literal

from redline.store.base import AuditStore, GroupBy, UsageRow

GROUPS: tuple[GroupBy, ...] = ("team", "model", "provider", "key")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

COLUMNS = ("group", "requests", "blocked", "redacted", "rerouted", "denied", "errors", "prompt_tokens",
           "completion_tokens", "cost_usd", "cost_per_1k_requests", "tokens_per_request")


def parse_when(value: str, *, now: datetime | None = None) -> datetime:
    """``7d``/``24h``/``30m``/``2w`` ago, ``today``, ``2025-01-01`` (UTC midnight) or an ISO 8601 time
    (naive = UTC). Raises ValueError with a message fit for the command line."""
    now = now or datetime.now(UTC)
    v = value.strip()
    m = _DURATION.match(v)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])
    low = v.lower()
    if low == "now":
        return now
    if low == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if low in ("month", "this-month"):
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    try:
        if len(v) == 10:
            d = date.fromisoformat(v)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        ts = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {value!r} (use 7d, 24h, 30m, today, 2025-01-01 or an ISO 8601 time)") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass
class UsageReport:
    by: GroupBy
    since: datetime
    until: datetime | None
    rows: list[UsageRow]

    @property
    def total(self) -> UsageRow:
        t = UsageRow("TOTAL", 0, 0, 0, 0, 0, 0, 0.0)
        for r in self.rows:
            t.requests += r.requests
            t.blocked += r.blocked
            t.redacted += r.redacted
            t.rerouted += r.rerouted
            t.denied += r.denied
            t.errors += r.errors
            t.prompt_tokens += r.prompt_tokens
            t.completion_tokens += r.completion_tokens
            t.cost_usd += r.cost_usd
        return t

    def records(self, *, with_total: bool = False) -> list[dict[str, Any]]:
        rows = [*self.rows, self.total] if with_total else self.rows
        return [row_dict(r) for r in rows]


def row_dict(r: UsageRow) -> dict[str, Any]:
    return {
        "group": r.group, "requests": r.requests, "blocked": r.blocked, "redacted": r.redacted,
        "rerouted": r.rerouted, "denied": r.denied, "errors": r.errors, "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens, "cost_usd": round(r.cost_usd, 6),
        "cost_per_1k_requests": round(r.cost_per_1k_requests, 6),
        "tokens_per_request": round(r.tokens_per_request, 1),
    }


def usage_report(store: AuditStore, by: GroupBy, since: datetime, until: datetime | None = None) -> UsageReport:
    if by not in GROUPS:
        raise ValueError(f"cannot group by {by!r}: use {', '.join(GROUPS)}")
    rows = store.usage(since, by, until=until)
    return UsageReport(by, since, until, rows)


def write_json(report: UsageReport, out: IO[str]) -> None:
    json.dump({"by": report.by, "since": report.since.isoformat(),
               "until": report.until.isoformat() if report.until else None,
               "rows": report.records(), "total": row_dict(report.total)}, out, indent=2)
    out.write("\n")


def write_csv(report: UsageReport, out: IO[str]) -> None:
    w = csv.DictWriter(out, fieldnames=[report.by if c == "group" else c for c in COLUMNS], lineterminator="\n")
    w.writeheader()
    for rec in report.records():
        rec[report.by] = rec.pop("group")
        w.writerow(rec)


def _money(x: float) -> str:
    if x == 0:
        return "0"
    return f"{x:,.4f}" if x < 1 else f"{x:,.2f}"


def render_table(report: UsageReport, out: IO[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    span = f"since {report.since:%Y-%m-%d %H:%M} UTC" + (
        f" until {report.until:%Y-%m-%d %H:%M} UTC" if report.until else "")
    table = Table(title=f"usage by {report.by}, {span}", header_style="bold", show_footer=bool(report.rows),
                  title_justify="left")
    tot = report.total
    cols: list[tuple[str, Literal["left", "right"], Callable[[UsageRow], str]]] = [
        (report.by, "left", lambda r: r.group),
        ("requests", "right", lambda r: f"{r.requests:,}"),
        ("blocked", "right", lambda r: f"{r.blocked:,}"),
        ("redacted", "right", lambda r: f"{r.redacted:,}"),
        ("rerouted", "right", lambda r: f"{r.rerouted:,}"),
        ("denied", "right", lambda r: f"{r.denied:,}"),
        ("prompt tok", "right", lambda r: f"{r.prompt_tokens:,}"),
        ("completion tok", "right", lambda r: f"{r.completion_tokens:,}"),
        ("cost USD", "right", lambda r: _money(r.cost_usd)),
        ("USD / 1k req", "right", lambda r: _money(r.cost_per_1k_requests)),
        ("tok / req", "right", lambda r: f"{r.tokens_per_request:,.0f}"),
    ]
    for name, justify, fn in cols:
        table.add_column(name, justify=justify, footer=fn(tot))
    for r in report.rows:
        table.add_row(*(fn(r) for _, _, fn in cols))
    Console(file=out, width=None if out.isatty() else 200).print(table)
    if not report.rows:
        out.write("no requests in this period\n")
