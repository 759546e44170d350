"""The dashboard in a real headless Chromium (Debian's ``chromium`` driven by Playwright), on real gateway traffic:
the openai SDK → the gateway (uvicorn) → the local upstream stand-in; then log in, see the charts drawn from that
traffic, filter events, create a key (and use it), revoke it. Screenshots go to ``test-artifacts/ui/``.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from redline.synth import fake_secret
from tests.gateway.conftest import Env

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
RNG = random.Random(77)
SECRET = fake_secret("openai-project-key", RNG)
EMAILS = ["wei.zhang@qq.com", "olivia.smith88@proton.me", "j.doe@example.org"]

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
if not os.access(CHROMIUM, os.X_OK):  # pragma: no cover - ./run test installs it
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _traffic(env: Env) -> int:
    """Real requests through the gateway; returns how many audit events they make."""
    _, ops_key = env.keys.create("ops", user="bob", name="ops-bot")
    n = 0
    research, ops = env.client(), env.client(key=ops_key)
    for i in range(8):
        research.chat.completions.create(model="ds-chat", messages=[{"role": "user", "content": f"summarise {i}"}])
        n += 1
    for i, email in enumerate(EMAILS * 2):  # personal data: pseudonymised
        (ops if i % 2 else research).chat.completions.create(
            model="ds-chat", messages=[{"role": "user", "content": f"write to {email} about the invoice"}])
        n += 1
    for client in (research, ops):  # a secret: blocked
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="ds-chat", messages=[{"role": "user", "content": f"key {SECRET}"}])
        n += 1
    for email in EMAILS[:2]:  # rerouted to the local provider
        ops.chat.completions.create(model="ds-reroute", messages=[{"role": "user", "content": f"mail {email}"}])
        n += 1
    for _ in range(3):
        ops.chat.completions.create(model="local-llama", messages=[{"role": "user", "content": "hello local"}])
        n += 1
    with pytest.raises(openai.AuthenticationError):
        env.client(key="rl-" + "x" * 40).chat.completions.create(
            model="ds-chat", messages=[{"role": "user", "content": "hi"}])
    return n + 1


PRICES = """
[models.echo-3]
input = 2.5
output = 10.0
[models.echo-5]
input = 0.15
output = 0.6
"""


class PricedEnv(Env):
    """The gateway test environment with prices for the stand-in models, so the spend views have data."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "prices.toml").write_text(PRICES)
        super().__init__(tmp, prices=str(tmp / "prices.toml"))


@pytest.fixture(scope="module")
def ui_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, int]]:
    os.environ["REDLINE_TEST_UPSTREAM_KEY"] = "upstream-provider-key-for-tests"
    e = PricedEnv(tmp_path_factory.mktemp("ui"))
    try:
        expected = _traffic(e)
        deadline = time.monotonic() + 10
        while e.audit.count() < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert e.audit.count() == expected
        yield e, expected
    finally:
        e.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _chart_total(page: Any, name: str, dataset: int = 0) -> float:
    return float(page.evaluate(
        "([n, i]) => window.redlineCharts[n].data.datasets[i].data.reduce((a, b) => a + b, 0)", [name, dataset]))


def _drawn(page: Any, name: str) -> bool:
    """The chart's canvas has non-transparent pixels (Chart.js really drew it)."""
    return bool(page.evaluate("""(n) => {
        const c = window.redlineCharts[n].canvas;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let painted = 0;
        for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) painted++; }
        return painted > 500;
    }""", name))


def test_dashboard_end_to_end(ui_env: tuple[Env, int], browser: Any) -> None:
    env, expected = ui_env
    base = f"http://127.0.0.1:{env.server.port}/ui"
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    problems: list[str] = []
    # Console errors (script errors, CSP violations, missing files); the refused login's 401 is expected.
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "status of 401" not in m.text
            else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    # Nothing is visible without logging in.
    page.goto(base + "/events")
    assert "/ui/login" in page.url
    assert page.locator("table").count() == 0
    _shot(page, "01-login")

    # A non-admin key is refused; the admin key gets in and lands where it was going.
    page.fill("#key", env.key)
    page.click("button[type=submit]")
    assert "not an active admin key" in page.inner_text("[role=alert]")
    page.fill("#key", env.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/events")
    cookie = next(c for c in ctx.cookies() if c["name"] == "redline_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # Overview: charts drawn from the traffic above.
    page.goto(base + "/")
    page.wait_for_function("() => window.redlineCharts && window.redlineCharts.activity")
    assert page.inner_text("#kpi-requests") == str(expected)
    assert _chart_total(page, "activity", 0) == expected  # dataset 0: requests
    assert _chart_total(page, "activity", 1) == 2  # blocked
    assert _chart_total(page, "activity", 3) == 2  # rerouted
    providers = page.evaluate("() => window.redlineCharts.provider.data.labels")
    assert {"cloud", "local"} <= set(providers)
    assert set(page.evaluate("() => window.redlineCharts.team.data.labels")) >= {"research", "ops"}
    for name in ("activity", "provider", "model", "team"):
        assert _drawn(page, name), name
    _shot(page, "02-overview")

    # Findings: types and fingerprints, never the values.
    page.goto(base + "/findings")
    page.wait_for_function("() => window.redlineCharts && window.redlineCharts.types")
    assert "email" in page.evaluate("() => window.redlineCharts.types.data.labels")
    assert _drawn(page, "types")
    assert page.locator("#fingerprints tbody tr").count() >= 3
    html = page.content()
    for value in (SECRET, *EMAILS):
        assert value not in html
    _shot(page, "03-findings")

    # Spend and efficiency, by model.
    page.goto(base + "/spend?by=model")
    page.wait_for_function("() => window.redlineCharts && window.redlineCharts.tokens")
    assert _chart_total(page, "tokens") > 0
    assert _chart_total(page, "cost") > 0
    assert "echo-3" in page.evaluate("() => window.redlineCharts.efficiency.data.labels")
    for name in ("tokens", "cost", "efficiency"):
        assert _drawn(page, name), name
    _shot(page, "04-spend")

    # Events: filter by action (the select submits the form) and by team.
    page.goto(base + "/events")
    assert page.locator("#events tbody tr").count() == expected
    page.select_option("select[name=action]", "block")
    page.wait_for_url("**/events?*action=block*")
    rows = page.locator("#events tbody tr")
    assert rows.count() == 2
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.action)")) == {"block"}
    page.select_option("select[name=team]", "ops")
    page.wait_for_url("**team=ops*")
    assert page.locator("#events tbody tr").count() == 1
    _shot(page, "05-events-filtered")
    page.goto(base + "/events?action=reroute")
    assert page.locator("#events tbody tr").count() == 2
    assert "from cloud" in page.inner_text("#events")

    # Keys: create one, use it, revoke it.
    page.goto(base + "/keys")
    page.fill("#create-key input[name=team]", "qa")
    page.fill("#create-key input[name=name]", "browser-test")
    page.fill("#create-key input[name=rpm]", "60")
    page.click("#create-key button[type=submit]")
    secret = page.inner_text("#new-secret").strip()
    assert secret.startswith("rl-")
    _shot(page, "06-key-created")
    client = env.client(key=secret)
    assert client.chat.completions.create(model="ds-chat", messages=[{"role": "user", "content": "hi"}]).choices
    key_id = next(k.key_id for k in env.keys.list() if k.name == "browser-test")
    page.goto(base + "/keys")
    page.once("dialog", lambda d: d.accept())
    page.click(f"#key-{key_id} button.danger")
    page.wait_for_selector("[role=status]")
    assert f"Revoked {key_id}" in page.inner_text("[role=status]")
    page.goto(base + "/keys?all=1")
    assert page.get_attribute(f"#key-{key_id}", "data-status") == "revoked"
    _shot(page, "07-key-revoked")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="ds-chat", messages=[{"role": "user", "content": "hi"}])

    # Log out: the pages are closed again.
    page.click("header .logout button")
    page.wait_for_url("**/ui/login")
    page.goto(base + "/")
    assert "/ui/login" in page.url
    assert problems == [], problems  # no script errors, no CSP violations
    ctx.close()
