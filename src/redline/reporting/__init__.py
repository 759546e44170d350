"""Reports people read: a self-contained HTML report with charts, and ``redline report`` for saved runs."""

from redline.reporting.html import render_html, summary_from_records
from redline.reporting.model import SEVERITIES, fix_for, severity

__all__ = ["SEVERITIES", "fix_for", "render_html", "severity", "summary_from_records"]
