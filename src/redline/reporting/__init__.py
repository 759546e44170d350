"""Reports people read: a self-contained HTML report with charts, and ``redline report`` for saved runs."""

from __future__ import annotations

from typing import Any

from redline.reporting.model import SEVERITIES, fix_for, severity

__all__ = ["SEVERITIES", "fix_for", "render_html", "severity", "summary_from_records"]


def __getattr__(name: str) -> Any:
    # The HTML renderer (and its templates) loads only when a report is written: a scan that prints JSON
    # lines should not pay for it at start-up.
    if name in ("render_html", "summary_from_records"):
        from redline.reporting import html

        return getattr(html, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
