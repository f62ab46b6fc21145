"""The dashboard at `/` in a real browser (Chromium through Playwright), against a real gateway.

The page must show what `/v1/usage` says: the same percentages, the same release times. These
tests never skip: without /usr/bin/chromium they fail, with the way to install it in the message.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
MODEL = "claude-sonnet-4-6"
HOUR_S = 3600
DAY_S = 86400
STATUS_TEXT = {"allowed": "OK", "allowed_warning": "Near the limit", "rejected": "Full"}
WINDOW_IDS = ("five_hour", "seven_day")


def shown_percent(value: float) -> str:
    """The page's rounding (JavaScript Math.round to one decimal): 42.5 -> "42.5%", 30 -> "30%"."""
    rounded = math.floor(value * 10 + 0.5) / 10
    if value > 0 and rounded == 0:
        return "<0.1%"
    return f"{rounded:.0f}%" if rounded == int(rounded) else f"{rounded:.1f}%"


def clock_text(ts: int) -> str:
    """How the page writes a time of day in the en-GB locale, UTC (the browser context's)."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%H:%M:%S")


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(browser: Browser, *, width: int = 1280) -> tuple[Page, list[str]]:
    """A fresh page (own storage) in UTC and en-GB, and the list its console errors land in."""
    context = await browser.new_context(viewport={"width": width, "height": 900}, locale="en-GB",
                                        timezone_id="UTC", color_scheme="light")
    page = await context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    return page, errors


async def send_message(url: str, key: str) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/messages", headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                                json={"model": MODEL, "max_tokens": 64,
                                      "messages": [{"role": "user", "content": "hi"}]}) as response:
            await response.read()
            return response.status


async def get_usage(url: str, key: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1/usage", headers={"x-api-key": key}) as response:
            assert response.status == 200, await response.text()
            return await response.json()


async def credits_per_request(gateway) -> float:
    """What one test request costs, measured through the public API on a key with a 1-credit window."""
    key = await gateway.create_key("probe", credits_5h=1, credits_7d=1)
    assert await send_message(gateway.url, key) == 200
    cost = (await get_usage(gateway.url, key))["five_hour"]["used_percent"] / 100
    assert cost > 0, "a request should cost credits"
    return cost


async def make_week_of_traffic(gateway, key: str) -> None:
    """Nine requests spread over six days, then five in the last four hours: the 5-hour window is
    near its limit, the weekly one is not, and both release capacity step by step."""
    for _ in range(9):
        assert await send_message(gateway.url, key) == 200
        gateway.clock.advance(16 * HOUR_S)
    gateway.clock.advance(6 * DAY_S - 9 * 16 * HOUR_S)
    for _ in range(5):
        assert await send_message(gateway.url, key) == 200
        gateway.clock.advance(50 * 60)
    gateway.clock.advance(-40 * 60)


async def show_usage(page: Page, url: str, key: str) -> None:
    """Open the dashboard, paste the key, wait for both bars."""
    await page.goto(f"{url}/")
    await page.fill("#key-input", key)
    await page.click("#key-submit")
    for window in WINDOW_IDS:
        await page.wait_for_selector(f"#window-{window} .js-chart svg")


async def check_window(page: Page, window: str, expected: dict[str, Any]) -> None:
    """The card shows the window's percent, status, next release and availability as in the JSON."""
    card = page.locator(f"#window-{window}")
    percent = expected["used_percent"]
    assert await card.locator(".js-percent").text_content() == shown_percent(percent)
    meter = card.locator('[role="progressbar"]')
    assert float(await meter.get_attribute("aria-valuenow")) == pytest.approx(min(100.0, percent), abs=0.05)
    assert await meter.get_attribute("aria-valuemax") == "100"
    assert await card.locator(".js-status").text_content() == STATUS_TEXT[expected["status"]]

    release = card.locator(".js-release")
    if expected["resets_at"] is None:
        assert "Nothing to release" in await release.text_content()
    else:
        shown = release.locator("time")
        assert await shown.get_attribute("datetime") == iso(expected["resets_at"])
        assert clock_text(expected["resets_at"]) in await shown.text_content()
        assert (await release.locator(".countdown").text_content()).startswith("in ")

    available = card.locator(".js-available")
    if expected["available_at"] is None:
        assert (await available.text_content()).startswith("Now")
    else:
        shown = available.locator("time")
        assert await shown.get_attribute("datetime") == iso(expected["available_at"])
        assert clock_text(expected["available_at"]) in await shown.text_content()

    # The chart: a step line, the 100 % line, and time labels on the axis.
    chart = card.locator(".js-chart svg")
    assert await chart.locator("path.c-line").count() == 1
    assert await chart.locator("line.c-limit").count() == 1
    labels = await chart.locator("text.c-label").all_text_contents()
    assert "now" in labels and len(labels) >= 4


async def test_dashboard_shows_what_v1_usage_says(gateway, browser: Browser) -> None:
    cost = await credits_per_request(gateway)
    # Each request is a sixth of the 5-hour window and a fortieth of the weekly one.
    key = await gateway.create_key("alice", credits_5h=6 * cost, credits_7d=40 * cost)
    await make_week_of_traffic(gateway, key)
    usage = await get_usage(gateway.url, key)
    assert usage["five_hour"]["status"] == "allowed_warning"  # the traffic did what it meant to

    page, errors = await open_page(browser)
    response = await page.goto(f"{gateway.url}/")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"

    await show_usage(page, gateway.url, key)
    assert await page.locator("#who-name").text_content() == "alice"
    for window in WINDOW_IDS:
        await check_window(page, window, usage[window])
    assert await page.locator("#overall-status").text_content() == "Near the limit"

    # Activity: requests per model, as a share of the window, never credits.
    activity = page.locator("#activity")
    assert MODEL in await activity.text_content()
    assert "5 requests" in await activity.locator(".activity-card").first.text_content()

    # Set-up snippets carry this server's URL, and the key only masked until asked for.
    assert await page.locator("#base-url").text_content() == gateway.url
    snippets = " ".join(await page.locator("#tool-panels pre").all_text_contents())
    assert f"ANTHROPIC_BASE_URL={gateway.url}" in snippets
    assert key not in snippets and key[:12] in snippets
    for tool in ("codex", "opencode", "curl"):
        await page.click(f"#tab-{tool}")
        assert await page.locator(f"#panel-{tool}").is_visible()
    codex = await page.locator("#panel-codex pre").first.text_content()
    assert f'base_url = "{gateway.url}/v1"' in codex and 'wire_api = "responses"' in codex
    await page.click("#toggle-key")
    assert key in " ".join(await page.locator("#tool-panels pre").all_text_contents())
    await page.click("#toggle-key")
    await page.click("#tab-claude-code")

    # The key is kept in this tab's session storage only: not in the URL, not in a cookie.
    assert key not in page.url
    assert await page.evaluate("sessionStorage.getItem('antex.key')") == key
    assert await page.evaluate("document.cookie") == ""

    # Numbers agree after a reload (the key comes back from session storage) and at phone width.
    await page.reload()
    await page.wait_for_selector("#window-five_hour .js-chart svg")
    await check_window(page, "five_hour", usage["five_hour"])

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    await page.set_viewport_size({"width": 360, "height": 780})
    await page.wait_for_timeout(100)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    await page.screenshot(path=str(ARTIFACTS / "dashboard-360.png"), full_page=True)

    await page.click("#forget-key")
    assert await page.locator("#key-card").is_visible()
    assert await page.evaluate("sessionStorage.getItem('antex.key')") is None
    assert key not in await page.content()

    assert errors == []


async def test_full_window_shows_when_requests_are_accepted_again(gateway, browser: Browser) -> None:
    cost = await credits_per_request(gateway)
    key = await gateway.create_key("bob", credits_5h=2 * cost, credits_7d=100 * cost)
    statuses = [await send_message(gateway.url, key) for _ in range(3)]
    assert statuses[-1] == 429, statuses
    usage = await get_usage(gateway.url, key)
    assert usage["five_hour"]["available_at"] is not None

    page, errors = await open_page(browser, width=360)
    await show_usage(page, gateway.url, key)
    for window in WINDOW_IDS:
        await check_window(page, window, usage[window])
    assert await page.locator("#overall-status").text_content() == "Full: requests paused"
    assert await page.locator("#window-five_hour").get_attribute("data-level") == "full"
    assert errors == []


async def test_a_wrong_key_is_not_accepted(gateway, browser: Browser) -> None:
    page, errors = await open_page(browser)
    await page.goto(f"{gateway.url}/")
    await page.fill("#key-input", "sk_live_" + "x" * 32)
    await page.click("#key-submit")
    notice = page.locator("#notice")
    await notice.wait_for(state="visible")
    assert "This key was not accepted" in await notice.text_content()
    assert await page.locator("#key-card").is_visible()
    assert await page.locator("#dashboard").is_hidden()
    assert await page.evaluate("sessionStorage.getItem('antex.key')") is None
    # The browser logs the refused request itself; nothing else may go wrong.
    assert [e for e in errors if "401 (Unauthorized)" not in e] == []
    assert len(errors) == 1


async def test_static_files_are_a_whitelist(gateway) -> None:
    async with aiohttp.ClientSession() as session:
        for name, content_type in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            async with session.get(f"{gateway.url}/static/{name}") as response:
                assert response.status == 200
                assert response.content_type == content_type
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                etag = response.headers["ETag"]
            async with session.get(f"{gateway.url}/static/{name}", headers={"If-None-Match": etag}) as response:
                assert response.status == 304
        for path in ("/static/index.html", "/static/..%2Fdashboard.py", "/static/%2e%2e/routes/dashboard.py",
                     "/static/dashboard.js.map"):
            async with session.get(f"{gateway.url}{path}") as response:
                assert response.status == 404, path
        async with session.get(f"{gateway.url}/") as response:
            page = await response.text()
        assert response.headers["Cache-Control"] == "no-cache"
        assert 'src="/static/dashboard.js?v=' in page
        assert "<script>" not in page and "style=" not in page
