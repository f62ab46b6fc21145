"""The dashboard at `/` in a real browser (Chromium through Playwright), against a real gateway.

The page must show what `/v1/usage` says: the same percentages, the same release times. These
tests never skip: without /usr/bin/chromium they fail, with the way to install it in the message.
"""
from __future__ import annotations

import json
import math
import re
import tomllib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Request, Response, async_playwright

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "antex" / "static"
MODULES = sorted(path.name for path in STATIC.glob("*.js"))  # every module the package ships
README_ORIGIN = "https://antex.example.com"
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
    """A fresh page (own storage) in UTC and en-GB, and the list its console errors, failed
    requests and HTTP error responses land in."""
    context = await browser.new_context(viewport={"width": width, "height": 900}, locale="en-GB",
                                        timezone_id="UTC", color_scheme="light")
    page = await context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def on_response(response: Response) -> None:
        if response.status >= 400:
            errors.append(f"HTTP {response.status}: {response.url}")

    def on_request_failed(request: Request) -> None:
        errors.append(f"failed: {request.url} ({request.failure})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("response", on_response)
    page.on("requestfailed", on_request_failed)
    return page, errors


def readme_block(section: str, language: str) -> str:
    """The first fenced block of `language` under README.md's `### {section}` heading."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    body = readme.split(f"\n### {section}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    match = re.search(rf"```{language}\n(.*?)```", body, re.S)
    assert match, f"no {language} block under {section} in README.md"
    return match.group(1)


async def model_names(url: str, key: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1/models", headers={"x-api-key": key}) as response:
            assert response.status == 200, await response.text()
            return {m["id"]: m["display_name"] for m in (await response.json())["data"]}


async def check_tool_snippets(page: Page, url: str, key: str) -> None:
    """The Codex CLI and OpenCode set-ups are README.md's, with this gateway's URL and models."""
    snippets = " ".join(await page.locator("#tool-panels pre").all_text_contents())
    assert f"ANTHROPIC_BASE_URL={url}" in snippets
    assert key not in snippets and key[:12] in snippets
    for tool in ("codex", "opencode", "curl"):
        await page.click(f"#tab-{tool}")
        assert await page.locator(f"#panel-{tool}").is_visible()

    codex_config, codex_catalog, codex_shell = await page.locator("#panel-codex pre").all_text_contents()
    assert 'model_catalog_json = "~/.codex/antex-models.json"' in codex_config
    assert 'wire_api = "responses"' in codex_config and f'base_url = "{url}/v1"' in codex_config
    readme_config = readme_block("Codex CLI", "toml").replace(README_ORIGIN, url)
    assert tomllib.loads(codex_config) == tomllib.loads(readme_config)
    readme_catalog = json.loads(readme_block("Codex CLI", "json"))
    readme_catalog["models"][0].update(slug=MODEL, display_name=(await model_names(url, key))[MODEL])
    assert json.loads(codex_catalog) == readme_catalog
    assert codex_shell.startswith(f"export ANTEX_API_KEY={key[:12]}")

    opencode = json.loads((await page.locator("#panel-opencode pre").first.text_content()))
    readme_opencode = json.loads(readme_block("OpenCode", "json").replace(README_ORIGIN, url))
    assert opencode["provider"]["antex"]["options"] == readme_opencode["provider"]["antex"]["options"]
    assert opencode["model"] == readme_opencode["model"] == f"antex/{MODEL}"
    assert MODEL in opencode["provider"]["antex"]["models"]


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
    loaded: list[Response] = []
    page.on("response", lambda response: loaded.append(response) if "/static/" in response.url else None)
    response = await page.goto(f"{gateway.url}/")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    release = re.search(r'src="/static/([0-9a-f]{12})/app\.js"', await response.text()).group(1)
    assert errors == []  # the load event waits for every module: a 404 or a syntax error shows here

    await show_usage(page, gateway.url, key)
    # Every module the package ships was loaded, from the release path, as JavaScript.
    scripts = {r.url.rsplit("/", 1)[1]: r for r in loaded if r.url.endswith(".js")}
    assert sorted(scripts) == MODULES
    for name, script in scripts.items():
        assert script.url == f"{gateway.url}/static/{release}/{name}"
        assert script.status == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert await page.locator("#who-name").text_content() == "alice"
    assert not await page.locator("#no-cap").is_visible()  # pro has a concurrency cap
    for window in WINDOW_IDS:
        await check_window(page, window, usage[window])
    assert await page.locator("#overall-status").text_content() == "Near the limit"

    # Activity: requests per model, as a share of the window, never credits.
    activity = page.locator("#activity")
    assert MODEL in await activity.text_content()
    assert "5 requests" in await activity.locator(".activity-card").first.text_content()

    # Set-up snippets carry this server's URL, and the key only masked until asked for.
    assert await page.locator("#base-url").text_content() == gateway.url
    await check_tool_snippets(page, gateway.url, key)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.click("#tab-codex")
    await page.locator("#tool-panels").screenshot(path=str(ARTIFACTS / "dashboard-codex.png"))
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
    key = await gateway.create_key("bob", credits_5h=2 * cost, credits_7d=100 * cost, max_concurrent=0)
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
    # No concurrency cap: the page says that requests in flight can take the key past 100 %.
    assert await page.locator("#no-cap").is_visible()
    assert "past 100%" in await page.locator("#no-cap").text_content()
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
    assert sorted(errors) == sorted([f"HTTP 401: {gateway.url}/v1/usage",
                                     "Failed to load resource: the server responded with a status of 401 (Unauthorized)"])


async def test_static_files_are_a_whitelist(gateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/") as response:
            page = await response.text()
            assert response.headers["Cache-Control"] == "no-cache"
        assert "<script>" not in page and "style=" not in page
        release = re.search(r'<script type="module" src="/static/([0-9a-f]{12})/app\.js"></script>', page).group(1)
        assert f'href="/static/{release}/dashboard.css"' in page

        for name in [*MODULES, "dashboard.css"]:
            content_type = "text/css" if name.endswith(".css") else "text/javascript"
            for path, cache in ((f"/static/{release}/{name}", "public, max-age=31536000, immutable"),
                                (f"/static/{name}", "no-cache")):
                async with session.get(f"{gateway.url}{path}") as response:
                    assert response.status == 200, path
                    assert response.content_type == content_type
                    assert response.headers["Cache-Control"] == cache
                    assert response.headers["X-Content-Type-Options"] == "nosniff"
                    assert "script-src 'self';" in response.headers["Content-Security-Policy"]
                    assert await response.read() == (STATIC / name).read_bytes()
                    etag = response.headers["ETag"]
                async with session.get(f"{gateway.url}{path}", headers={"If-None-Match": etag}) as response:
                    assert response.status == 304

        for path in ("/static/index.html", f"/static/{release}/index.html", "/static/..%2Fdashboard.py",
                     "/static/%2e%2e/routes/dashboard.py", f"/static/{release}/..%2F..%2Froutes%2Fdashboard.py",
                     "/static/dashboard.js", "/static/app.js.map", "/static/000000000000/app.js",
                     f"/static/{release}/app.js/x", f"/static/{release}%2F..%2F/app.js"):
            async with session.get(f"{gateway.url}{path}") as response:
                assert response.status == 404, path
