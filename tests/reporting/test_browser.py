"""The HTML report in a real headless Chromium (Debian's ``chromium``, driven by Playwright's Python package).

Checks what a reader relies on: the page opens with no console error and no request besides the file itself, the
charts are drawn, filtering and sorting work, and record text (a path holding ``<script>``) stays text.
Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from redline.cli import main
from tests.reporting.conftest import EVIL_DIR, db_and_probe_records

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("REDLINE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (./run test installs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        yield b
        b.close()


class Opened:
    def __init__(self, page: Any, url: str) -> None:
        self.page, self.url = page, url
        self.console: list[tuple[str, str]] = []
        self.requests: list[str] = []


def open_report(browser: Any, path: Path, width: int = 1400) -> Iterator[Opened]:
    ctx = browser.new_context(viewport={"width": width, "height": 900})
    page = ctx.new_page()
    url = path.resolve().as_uri()
    o = Opened(page, url)
    page.on("console", lambda m: o.console.append((m.type, m.text)))
    page.on("pageerror", lambda e: o.console.append(("pageerror", str(e))))
    page.on("request", lambda r: o.requests.append(r.url))
    page.goto(url)
    page.wait_for_selector("html[data-redline-ready]", timeout=15_000)
    try:
        yield o
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def mixed_report(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Opened]:
    """Files (incl. a path with <script>), a database and a probe result, through `redline report`."""
    import tests.reporting.conftest as c

    tmp = tmp_path_factory.mktemp("browser")
    logs = c.logs.__wrapped__(tmp)  # type: ignore[attr-defined]
    saved = tmp / "run.jsonl"
    main(["scan", str(logs), "--format", "jsonl", "--output", str(saved), "--no-progress"])
    with saved.open("a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in db_and_probe_records())
    out = tmp / "mixed-report.html"
    assert main(["report", str(saved), "--output", str(out)]) == 0
    yield from open_report(browser, out)


def test_opens_without_errors_or_network(mixed_report: Opened) -> None:
    o = mixed_report
    assert [m for m in o.console if m[0] in ("error", "warning", "pageerror")] == []
    assert o.requests == [o.url]
    assert o.page.evaluate("window.__pwned") is None
    assert o.page.evaluate("window.redline.errors") == []
    o.page.screenshot(path=str(ARTIFACTS / "report-mixed-full.png"), full_page=True)


def test_record_text_stays_text(mixed_report: Opened) -> None:
    cells = mixed_report.page.locator("#findings-table td.src").all_text_contents()
    assert any(EVIL_DIR in c for c in cells)
    assert mixed_report.page.locator("#findings-table img").count() == 0
    assert "logs.<b>bold</b>" in mixed_report.page.locator("#chat-table").inner_text()


def test_charts_render(mixed_report: Opened) -> None:
    page = mixed_report.page
    charts = page.evaluate("""() => Object.fromEntries(Object.entries(window.redline.charts).map(([k, c]) =>
        [k, {type: c.config.type, total: c.data.datasets.reduce((s, d) => s + d.data.reduce((a, b) => a + b, 0), 0),
             painted: (() => { const x = c.canvas.getContext('2d'), {width, height} = c.canvas;
                               const px = x.getImageData(0, 0, width, height).data; let n = 0;
                               for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++; return n; })()}]))""")
    assert set(charts) == {"severity", "kinds", "types", "sources"}
    total = page.evaluate("window.redline.data.findings.length")
    assert charts["severity"]["total"] == charts["kinds"]["total"] == charts["types"]["total"] == total
    assert all(c["painted"] > 500 for c in charts.values()), charts
    page.locator("#charts").screenshot(path=str(ARTIFACTS / "report-charts.png"))


def test_filtering_and_sorting(mixed_report: Opened) -> None:
    page = mixed_report.page
    total = page.evaluate("window.redline.data.findings.length")
    rows = page.locator("#findings-table tbody tr")
    assert rows.count() == total

    page.select_option("#f-kind", "chat")
    kinds = page.locator("#findings-table tbody tr td:nth-child(2)").all_text_contents()
    assert kinds and set(kinds) == {"chat"} and len(kinds) < total
    assert page.locator("#f-count").inner_text() == f"showing {len(kinds)} of {total} finding(s)"
    sources = page.locator("#sources-table tbody tr td.src").all_text_contents()
    assert "main.users" not in sources  # the per-source table follows the filter

    page.click("#f-reset")
    page.fill("#f-text", "github-pat")
    page.wait_for_function("() => document.getElementById('f-count').textContent.startsWith('showing')")
    types = page.locator("#findings-table tbody tr td:nth-child(3)").all_text_contents()
    assert types and set(types) == {"github-pat"}
    page.screenshot(path=str(ARTIFACTS / "report-filtered.png"), full_page=False)

    page.click("#f-reset")
    header = page.locator("#findings-table thead th[data-key='type']")
    header.click()
    asc = page.locator("#findings-table tbody tr td:nth-child(3)").all_text_contents()
    assert asc == sorted(asc) and header.get_attribute("aria-sort") == "ascending"
    header.click()
    desc = page.locator("#findings-table tbody tr td:nth-child(3)").all_text_contents()
    assert desc == sorted(asc, reverse=True) and header.get_attribute("aria-sort") == "descending"

    # The per-source table starts with the most findings first; a click on the header flips it.
    def counts() -> list[int]:
        return [int(x) for x in page.locator("#sources-table tbody tr td:nth-child(3)").all_text_contents()]

    first = counts()
    assert len(first) > 2 and first == sorted(first, reverse=True)
    page.locator("#sources-table thead th[data-key='n']").click()
    assert counts() == sorted(first)


def test_demo_report_screenshot(tmp_path: Path, browser: Any, capsys: pytest.CaptureFixture[str]) -> None:
    sample = resources.files("redline") / "samples" / "log_stream.jsonl"
    out = tmp_path / "demo.html"
    with resources.as_file(sample) as path:
        main(["scan", str(path), "--format", "html", "--output", str(out), "--no-progress", "--fail-on", "never"])
    capsys.readouterr()
    for o in open_report(browser, out):
        assert [m for m in o.console if m[0] in ("error", "warning", "pageerror")] == []
        assert o.requests == [o.url]
        o.page.screenshot(path=str(ARTIFACTS / "report-demo-full.png"), full_page=True)
        o.page.screenshot(path=str(ARTIFACTS / "report-demo-top.png"))
