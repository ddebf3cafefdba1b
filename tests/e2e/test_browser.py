"""The web client and the docs in a real browser: Debian's Chromium driven by Playwright.

Every request to a host other than this machine is aborted and recorded, so the
pages are proven to work offline (no CDN). The client test clicks through both
flows and saves the screenshots the README shows (docs/screenshot*.png).
"""

import json
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    WebSocketRoute,
    async_playwright,
    expect,
)

from msarch.channels import ALL
from tests.utils.stack import Stack, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
SCREENSHOTS = Path(__file__).parents[2] / "docs"
TIMEOUT_MS = 20_000

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert shutil.which(CHROMIUM), "apt-get install -y chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class Offline:
    """A browser context in which any request leaving this machine is aborted and recorded."""

    def __init__(self) -> None:
        self.blocked: list[str] = []

    async def route(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            await route.continue_()
        else:
            self.blocked.append(route.request.url)
            await route.abort("internetdisconnected")

    async def open(self, browser: Browser, width: int = 1280, height: int = 900) -> BrowserContext:
        context = await browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(TIMEOUT_MS)
        await context.route("**/*", self.route)
        return context


async def new_page(context: BrowserContext) -> tuple[Page, list[str]]:
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page, errors


async def test_openapi_and_asyncapi_pages_render_offline(stack: Stack, browser: Browser) -> None:
    offline = Offline()
    context = await offline.open(browser)
    try:
        page, errors = await new_page(context)
        await page.goto(f"{stack.gateway_url}/docs")
        for path in ("/api/roundtrip", "/api/batch", "/api/batch/batchkeys"):
            await expect(page.locator(f'.opblock-summary-path[data-path="{path}"]')).to_be_visible()
        await expect(page.locator(".info .title")).to_contain_text("msarch")

        await page.goto(f"{stack.gateway_url}/docs/asyncapi")
        channels = page.get_by_test_id("asyncapi-channels")
        for channel in ALL:
            row = channels.locator(f'tr[data-channel="{channel.name}"]')
            await expect(row.locator(".tag.send")).to_have_text(channel.producer)
            await expect(row.locator(".tag.receive")).to_have_text(channel.consumer)
        messages = page.get_by_test_id("asyncapi-messages")
        for channel in ALL:
            card = messages.locator(f'[data-message="{channel.payload.__name__}"]')
            for field in channel.payload.model_fields:
                await expect(card.locator("code", has_text=field).first).to_be_visible()
        assert errors == []
    finally:
        await context.close()
    assert offline.blocked == [], f"the docs tried to reach the internet: {offline.blocked}"


async def test_client_roundtrip_and_batch_flows(stack: Stack, browser: Browser) -> None:
    offline = Offline()
    context = await offline.open(browser)
    try:
        page, errors = await new_page(context)
        await page.goto(stack.gateway_url + "/")
        await expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open")

        key = f"browser-{uuid.uuid4().hex[:8]}"
        await page.get_by_label("Key", exact=True).fill(key)
        await page.get_by_label("Value", exact=True).fill("hello from Chromium")
        await page.get_by_test_id("rt-send").click()
        echo = page.get_by_test_id("rt-list").locator("tr", has_text=key)
        await expect(echo.get_by_test_id("rt-latency")).to_have_text(re.compile(r"^\d+\.\d ms$"))
        await expect(echo).to_contain_text("hello from Chromium")

        await page.get_by_label("Size", exact=True).fill("20")
        await page.get_by_test_id("batch-send").click()
        await expect(page.get_by_test_id("batch-status")).to_have_text("Done")
        await expect(page.get_by_test_id("batch-elapsed")).to_have_text(re.compile(r"ms$"))
        batch_id = (await page.get_by_test_id("batch-id").text_content() or "").strip()
        uuid.UUID(batch_id)

        stored = page.get_by_test_id("batches-list").locator(f'[data-batch-id="{batch_id}"]')
        await stored.click()
        values = page.get_by_test_id("values-list").locator("tr")
        await expect(values).to_have_count(20)
        await expect(values.first).to_contain_text(f"{batch_id}_key_0")
        await expect(values.last).to_contain_text(f"{batch_id}_value_19")
        await expect(page.get_by_test_id("values-range")).to_have_text("1\N{EN DASH}20 of 20")

        SCREENSHOTS.mkdir(exist_ok=True)
        await page.screenshot(path=SCREENSHOTS / "screenshot.png", full_page=True)
        await page.set_viewport_size({"width": 390, "height": 844})
        await page.screenshot(path=SCREENSHOTS / "screenshot-narrow.png", full_page=True)
        assert errors == []
    finally:
        await context.close()
    assert offline.blocked == []


async def test_client_reconnects_and_resumes_after_the_last_event_id(
    stack: Stack, browser: Browser
) -> None:
    """The websocket is mocked here (route_web_socket): frames with event_id, then drops."""
    offline = Offline()
    context = await offline.open(browser)
    sockets: list[WebSocketRoute] = []
    connected_at: list[float] = []

    def connect(socket: WebSocketRoute) -> None:
        sockets.append(socket)
        connected_at.append(time.monotonic())

    try:
        page, errors = await new_page(context)
        await page.route_web_socket(re.compile(r"/ws(\?.*)?$"), connect)
        await page.goto(stack.gateway_url + "/")
        status = page.get_by_test_id("conn-status")
        await expect(status).to_have_attribute("data-state", "open")
        frame = {"id": str(uuid.uuid4()), "key": "from-another-tab", "value": "v"}
        sockets[0].send(json.dumps({**frame, "accepted_at": "2026-01-01T00:00:00Z"}))
        sockets[0].send(json.dumps({**frame, "id": str(uuid.uuid4()), "event_id": "17-0"}))
        await expect(page.get_by_test_id("rt-list").locator("tr")).to_have_count(2)

        await sockets[0].close(code=1011)
        await wait_for(lambda: len(sockets) == 2, 10)
        assert "after" not in sockets[0].url
        assert sockets[1].url.endswith("/ws?after=17-0")
        await expect(status).to_have_attribute("data-state", "open")

        # Connections that drop at once (like the gateway's 1013) back off ever longer.
        for dropped in (1, 2):
            await sockets[dropped].close(code=1013)
            await wait_for(lambda n=dropped: len(sockets) == n + 2, 10)
        first_wait, second_wait = (
            connected_at[2] - connected_at[1],
            connected_at[3] - connected_at[2],
        )
        assert second_wait > first_wait * 1.3, (first_wait, second_wait)
        assert errors == []
    finally:
        await context.close()


async def test_client_shows_problem_title_and_detail(stack: Stack, browser: Browser) -> None:
    offline = Offline()
    context = await offline.open(browser, width=390, height=844)
    try:
        page, _ = await new_page(context)
        await page.goto(stack.gateway_url + "/")
        await page.get_by_label("Size", exact=True).fill("2000000")
        await page.get_by_test_id("batch-send").click()
        problem = page.get_by_test_id("batch-error")
        await expect(problem).to_contain_text("Invalid input")
        await expect(problem).to_contain_text("size must be between 1 and")
    finally:
        await context.close()
