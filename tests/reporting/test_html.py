"""The HTML report as a document: self-contained, escaped, no raw values, every section present."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from redline.engine import builtin_rules
from redline.report import Summary
from redline.reporting import render_html, severity
from redline.reporting.html import build_data, prepare, probe_html
from redline.reporting.model import fix_for, rule_index, safe_text
from tests.reporting.conftest import db_and_probe_records

RAW = "ghp_" + "R4wV4lu3" * 4 + "abcd"
EVIL = "<script>window.__pwned=1</script><img src=x onerror=alert(1)>"


class _Doc(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        self.urls += [v for k, v in a.items() if k in ("src", "href", "action", "srcset", "poster", "data") and v]
        self._in_script = tag == "script"
        if tag == "script":
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def records() -> list[dict[str, Any]]:
    return [
        {"path": f"/var/log/{EVIL}.log", "line": 2, "column": 7, "start": 30, "end": 70, "kind": "secret",
         "type": "github-pat", "confidence": "high", "fingerprint": "0f" * 12, "snippet": "ghp_…(40 chars)",
         "value": RAW},
        *db_and_probe_records(),
    ]


@pytest.fixture(scope="module")
def page() -> str:
    summary = Summary(sources=3, bytes=12_345, seconds=1.5, targets=["/var/log", "postgres://app:hunter2@db/x"],
                      started_at="2026-01-02T03:04:05+00:00", read_only=True)
    for r in records():
        summary.by_kind[r.get("kind", "probe")] += 1
    return render_html(records(), summary, builtin_rules())


def test_self_contained_no_external_urls(page: str) -> None:
    doc = _Doc()
    doc.feed(page)
    assert not [u for u in doc.urls if re.match(r"\s*(https?:)?//", u)], doc.urls
    assert all(u.startswith("#") for u in doc.urls), doc.urls
    assert not any(tag == "link" or (tag == "script" and "src" in a) for tag, a in doc.tags)
    csp = next(a["content"] for tag, a in doc.tags
               if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert csp and "default-src 'none'" in csp
    # Chart.js is inlined, not fetched.
    assert any("Chart.js v4" in s for s in doc.scripts)


def test_nothing_raw_and_everything_escaped(page: str) -> None:
    assert RAW not in page
    assert "hunter2" not in page and "postgres://app:***@db/x" in page
    # The evil path appears only escaped (HTML) or \u-escaped (JSON island), never as markup.
    assert EVIL not in page and "<img src=x" not in page and "<b>bold</b>" not in page
    assert "logs.&lt;b&gt;bold&lt;/b&gt;" in page  # server-rendered (chat table), escaped
    island = re.search(r'<script type="application/json" id="redline-data">(.*?)</script>', page, re.S)
    assert island is not None and "<" not in island.group(1)
    data = json.loads(island.group(1))
    assert any(EVIL in f["src"] for f in data["findings"])
    assert all("value" not in f for f in data["findings"])


def test_sections_and_summary(page: str) -> None:
    for section in ("summary", "charts", "findings", "chats", "fixes", "method"):
        assert f'<section id="{section}"' in page
    assert "read-only" in page and "2026-01-02 03:04:05 UTC" in page and "12.3 kB" in page and "1.50 s" in page
    # Fixes: the rule's own fix plus the kind's follow-up; kind defaults for rules without one; probes.
    assert "Then purge it from the logs" in page
    assert "Set requirepass" in page and "column name suggests" in page.lower()


def test_chart_data_and_severity() -> None:
    rules = rule_index(builtin_rules())
    listed, verdicts = prepare(records(), rules)
    assert verdicts == {"open": 1, "auth-required": 1, "closed": 1}
    assert len(listed) == len(records()) - 1 + 1  # the closed port goes, the --inspect example comes
    data = build_data(listed, rules)
    charts = data["charts"]
    sev = dict(zip(charts["severity"]["labels"], charts["severity"]["data"], strict=True))
    assert sev == {"critical": 1, "high": 4, "medium": 1, "low": 1, "info": 0}
    assert set(charts["kinds"]["labels"]) == {"secret", "pii", "chat", "probe"}
    assert sum(charts["types"]["data"]) == len(listed)
    assert data["findings"][0]["sev"] == "critical"


@pytest.mark.parametrize(("rec", "expected"), [
    ({"kind": "secret", "confidence": "high"}, "critical"),
    ({"kind": "secret", "confidence": "medium"}, "high"),
    ({"kind": "secret", "confidence": "low"}, "medium"),
    ({"kind": "pii", "confidence": "high"}, "high"),
    ({"kind": "chat", "confidence": "medium"}, "medium"),
    ({"kind": "pii", "confidence": "low"}, "low"),
    ({"host": "h", "port": 1, "verdict": "open"}, "high"),
    ({"host": "h", "port": 1, "verdict": "open", "severity": "critical"}, "critical"),
    ({"host": "h", "port": 1, "verdict": "closed", "severity": "none"}, "info"),
    ({"host": "h", "port": 1, "verdict": "auth-required"}, "low"),
])
def test_severity(rec: dict[str, Any], expected: str) -> None:
    assert severity(rec) == expected


def test_fixes_come_from_rules_with_kind_defaults() -> None:
    rules = rule_index(builtin_rules())
    gh = fix_for("github-pat", "secret", rules)
    assert gh.text == rules["github-pat"].fix and "purge" in gh.follow_up
    assert "Rotate" in fix_for("no-such-rule", "secret", rules).text
    assert "Purge" in fix_for("no-such-rule", "pii", rules).text
    assert "Stop logging" in fix_for("no-such-rule", "chat", rules).text
    assert "Close the port" in fix_for("redis", "probe", rules, {"host": "h", "verdict": "open"}).text


def test_safe_text_hides_url_passwords() -> None:
    assert safe_text("clickhouse://u:p%40ss@h:9000/db") == "clickhouse://u:***@h:9000/db"
    assert safe_text("/plain/path") == "/plain/path"


def test_empty_report_renders() -> None:
    page = render_html([], None, [])
    assert "No chat transcripts found" in page and "Nothing to fix" in page


def test_probe_report() -> None:
    from tests.reporting.conftest import PROBE_RESULTS

    page = probe_html(PROBE_RESULTS, seconds=2.5)
    assert "redline probe report" in page and "Endpoints probed" in page and "2.50 s" in page
    assert "redis (open)" in page and "postgresql (auth-required)" in page and "Set requirepass" in page
