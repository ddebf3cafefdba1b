"""The web client and the docs in a real browser: Debian's Chromium driven by Playwright.

Every request to a host other than this machine is aborted and recorded, so the
pages are proven to work offline (no CDN). The client tests click through the
flows and save screenshots: under tests/artifacts/, or with MSARCH_SCREENSHOTS=1
as the ones the README shows (docs/screenshot*.png).
"""

import asyncio
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    WebSocketRoute,
    expect,
)

from msarch import channels
from msarch.channels import ALL
from msarch.messages import KeyValue
from msarch.testing.stack import Stack, StackFactory, wait_for
from tests.utils.broker import connected_bus
from tests.utils.browser import chromium

pytestmark = pytest.mark.e2e

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
ROOT = Path(__file__).parents[2]
# Only a deliberate run refreshes the pictures in docs/; others keep the git tree clean.
SCREENSHOTS = ROOT / ("docs" if os.environ.get("MSARCH_SCREENSHOTS") == "1" else "tests/artifacts")
TIMEOUT_MS = 20_000

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


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

        await page.get_by_test_id("events-newest").click()
        stored_kv = page.get_by_test_id("events-list").locator('[data-type="KeyValueStored"]')
        await expect(stored_kv.filter(has_text=key)).to_have_count(1)

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
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


ROUNDTRIPS = 60
PACE_S = 0.05


async def test_client_shows_every_roundtrip_once_although_its_socket_drops(
    stack: Stack, browser: Browser
) -> None:
    """Roundtrips stream in while the page loses its websocket twice; it resumes with ?after."""
    offline = Offline()
    context = await offline.open(browser)
    prefix = f"drop-{uuid.uuid4().hex[:8]}"
    sent: list[str] = []

    async def send_roundtrips() -> None:
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as http:
            for i in range(ROUNDTRIPS):
                body = {"key": f"{prefix}-{i}", "value": str(i)}
                answer = await http.post("/api/roundtrip", json=body)
                assert answer.status_code == 202, answer.text
                sent.append(answer.json()["id"])
                await asyncio.sleep(PACE_S)

    # Every socket passes through Playwright, which can then drop it as a server would.
    sockets: list[WebSocketRoute] = []

    def through_playwright(socket: WebSocketRoute) -> None:
        socket.connect_to_server()
        sockets.append(socket)

    try:
        page, errors = await new_page(context)
        await page.route_web_socket(re.compile(r"/ws(\?.*)?$"), through_playwright)
        await page.goto(stack.gateway_url + "/")
        status = page.get_by_test_id("conn-status")
        await expect(status).to_have_attribute("data-state", "open")

        sending = asyncio.create_task(send_roundtrips())
        try:
            # First the client closes its own socket, then "the server" drops it.
            async def client_closes() -> None:
                await page.evaluate("window.msarchLive.socket.close()")

            async def server_drops() -> None:
                await sockets[-1].close(code=1011, reason="dropped by the test")

            for drop, (after_sent, close) in enumerate(
                [(15, client_closes), (35, server_drops)], start=2
            ):
                await wait_for(lambda n=after_sent: len(sent) >= n, 20)
                dropped_at = len(sent)
                await close()
                await wait_for(lambda n=drop: len(sockets) == n, 10)
                await expect(status).to_have_attribute("data-state", "open")
                assert len(sent) > dropped_at, "no roundtrip was sent while the socket was away"
            await sending
        finally:
            sending.cancel()

        urls = [socket.url for socket in sockets]
        assert len(urls) == 3, urls
        assert all(parse_qs(urlsplit(url).query).get("after") for url in urls[1:]), urls
        rows = page.get_by_test_id("rt-list").locator("tr").filter(has_text=f"{prefix}-")
        await expect(rows).to_have_count(ROUNDTRIPS)
        shown = await rows.evaluate_all(
            "rows => rows.map(row => [row.dataset.id, row.cells[0].textContent])"
        )
        ids = Counter(row_id for row_id, _ in shown)
        keys = Counter(key for _, key in shown)
        assert ids == Counter(sent), f"missing {set(sent) - set(ids)}, twice {ids - Counter(sent)}"
        assert keys == Counter(f"{prefix}-{i}" for i in range(ROUNDTRIPS))
        assert errors == []
    finally:
        await context.close()
    assert offline.blocked == []


async def test_event_log_view_shows_the_events_and_pages_with_next_after(
    stack: Stack, browser: Browser
) -> None:
    store = stack.store()
    try:
        start = await store.last_event_id()
    finally:
        await store.close()
    prefix = f"log-{uuid.uuid4().hex[:8]}"
    keys = [f"{prefix}-{i}" for i in range(3)]
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        # A big batch first, so that the log surely has more than one page (100 events).
        batches = []
        for size in (150, 5):
            answer = await http.post("/api/batch", json={"size": size})
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "Done", answer.text
            batches.append(answer.json()["batch_id"])
        small = batches[1][:8]
        for i, key in enumerate(keys):
            answer = await http.post("/api/roundtrip", json={"key": key, "value": f"value {i}"})
            assert answer.status_code == 202, answer.text

        log_tail: list[dict[str, Any]] = []

        async def all_stored() -> bool:
            params: dict[str, str | int] = {"limit": 1000}
            if start:
                params["after"] = start
            page = (await http.get("/api/events", params=params)).json()
            stored = {e["payload"]["key"] for e in page["events"] if e["type"] == "KeyValueStored"}
            log_tail[:] = page["events"]
            return stored >= set(keys)

        await wait_for(all_stored, 20)
        # The store handles messages concurrently: the three roundtrips may be appended in any
        # order, so the newest event is whichever of them came last, not necessarily keys[-1].
        newest = log_tail[-1]
        assert newest["type"] == "KeyValueStored"
        assert newest["payload"]["key"] in keys

    offline = Offline()
    context = await offline.open(browser)
    try:
        page, errors = await new_page(context)
        async with page.expect_response(re.compile(r"/api/events\?")) as first_answer:
            await page.goto(stack.gateway_url + "/")
        first = await (await first_answer.value).json()
        assert len(first["events"]) == 100
        assert first["next_after"] == first["events"][-1]["id"]

        rows = page.get_by_test_id("events-list").get_by_test_id("event-row")
        await page.get_by_test_id("events-hide-items").uncheck()
        await expect(rows).to_have_count(100)
        async with page.expect_response(re.compile(r"/api/events\?")) as second_answer:
            await page.get_by_test_id("events-more").click()
        second = await second_answer.value
        assert parse_qs(urlsplit(second.url).query)["after"] == [first["next_after"]]
        more = (await second.json())["events"]
        await expect(rows).to_have_count(100 + len(more))
        shown = await rows.evaluate_all("rows => rows.map(row => row.dataset.eventId)")
        assert shown == [e["id"] for e in first["events"] + more]
        positions = [tuple(map(int, event_id.split("-"))) for event_id in shown]
        assert positions == sorted(set(positions)), "the pages overlap or are out of order"

        await page.get_by_test_id("events-hide-items").check()
        await page.get_by_test_id("events-newest").click()
        await expect(page.get_by_test_id("events-page")).to_contain_text("end of log")
        for i, key in enumerate(keys):
            row = rows.filter(has_text=key)
            await expect(row).to_have_attribute("data-type", "KeyValueStored")
            await expect(row.locator(".event-summary")).to_have_text(f"{key} = value {i}")
        await expect(rows.last).to_have_attribute("data-event-id", newest["id"])
        await expect(rows.last).to_contain_text(newest["payload"]["key"])
        requested = rows.filter(has_text=f"batch {small} · size 5")
        await expect(requested.first).to_have_attribute("data-type", "BatchRequested")
        await expect(rows.filter(has_text=f"batch {small} · size 5 · Done")).to_have_attribute(
            "data-type", "BatchCommitted"
        )
        hidden = page.get_by_test_id("event-hidden").filter(has_text=f"batch {small} #0–#4")
        await expect(hidden).to_have_attribute("data-count", "5")
        await expect(rows.filter(has_text=f"batch {small} #")).to_have_count(0)

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        panel = page.get_by_test_id("events-panel")
        await panel.screenshot(path=SCREENSHOTS / "screenshot-events.png")

        await page.get_by_test_id("events-hide-items").uncheck()
        items = rows.filter(has_text=f"batch {small} #")
        await expect(items).to_have_count(5)
        await expect(items.first).to_have_attribute("data-type", "BatchItemStaged")
        await page.set_viewport_size({"width": 390, "height": 844})
        narrow = ROOT / "tests/artifacts"
        narrow.mkdir(parents=True, exist_ok=True)
        await panel.screenshot(path=narrow / "screenshot-events-narrow.png")
        assert errors == []
    finally:
        await context.close()
    assert offline.blocked == []


async def test_client_says_so_when_roundtrips_it_missed_were_trimmed_from_the_log(
    private_stack: Stack, browser: Browser
) -> None:
    """The page's socket drops; while it is away roundtrips are made and the log is trimmed
    past them. The real websocket service answers the resume with a gap frame, which the page
    shows, and then the roundtrip it still has."""
    stack = private_stack
    offline = Offline()
    context = await offline.open(browser)
    sockets: list[WebSocketRoute] = []
    resume = asyncio.Event()

    async def through(socket: WebSocketRoute) -> None:
        sockets.append(socket)
        if len(sockets) > 1:
            await resume.wait()  # the reconnect reaches the server once the log is trimmed
        socket.connect_to_server()

    async def send(client: httpx.AsyncClient, keys: list[str]) -> None:
        for key in keys:
            answer = await client.post(
                f"{stack.gateway_url}/api/roundtrip", json={"key": key, "value": "v"}
            )
            assert answer.status_code == 202, answer.text

    store = stack.store()
    try:
        page, errors = await new_page(context)
        await page.route_web_socket(re.compile(r"/ws(\?.*)?$"), through)
        await page.goto(stack.gateway_url + "/")
        await expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "open")
        rows = page.get_by_test_id("rt-list").locator("tr")
        async with httpx.AsyncClient(timeout=30) as client:
            await send(client, ["seen-0", "seen-1"])
            await expect(rows).to_have_count(2)
            await sockets[0].close(code=1011)
            await wait_for(lambda: len(sockets) == 2, 10)
            await send(client, ["missed-0", "missed-1", "kept"])
        await wait_for(lambda: _count_events(store, 5), 30)
        ids = [event.id for event in await store.read_events(None, 10)]
        await store.trim_events_before(ids[4])
        resume.set()
        gap = page.get_by_test_id("rt-gap")
        await expect(gap).to_be_visible()
        await expect(gap).to_contain_text("no longer in the event log")
        await expect(gap).to_have_attribute("data-oldest-event-id", ids[4])
        await expect(rows).to_have_count(3)
        await expect(rows.filter(has_text="kept")).to_have_count(1)
        assert "after=" in sockets[1].url
        assert errors == []
    finally:
        await store.close()
        await context.close()


async def _count_events(store: Any, count: int) -> bool:
    return len(await store.read_events(None, count)) >= count


async def test_dead_letter_panel_lists_drops_and_requeues(
    private_stack: Stack, browser: Browser
) -> None:
    """A poison message and a good one that failed earlier, in the real dead letters: the
    panel shows both with their reasons; Drop removes the poison, Requeue sends the good one
    back, and its roundtrip arrives on the page once."""
    stack = private_stack
    kv = KeyValue(key="came-back", value="from the dead letters")
    async with connected_bus(stack.settings) as bus:
        await bus.publish_raw(channels.EVENT, b'{"key": "", "value": "poison"}', message_id="p")
        await bus.dead_letter(
            bus.name(channels.EVENT), kv.model_dump_json().encode(), {}, "handler failed 5 times",
            message_id=str(kv.id), deliveries=5,
        )  # fmt: skip

        async def both() -> bool:
            return await bus.dead_letter_count(channels.EVENT) == 2

        await wait_for(both, 30, 0.2)
    offline = Offline()
    context = await offline.open(browser)
    try:
        page, errors = await new_page(context)
        await page.goto(stack.gateway_url + "/")
        rows = page.get_by_test_id("dead-list").get_by_test_id("dead-row")
        await expect(rows).to_have_count(2)
        await expect(page.get_by_test_id("dead-counts")).to_contain_text("event 2")
        poison = rows.filter(has_text="invalid message")
        await expect(poison).to_have_count(1)
        await page.get_by_test_id("dead-panel").screenshot(
            path=SCREENSHOTS / "screenshot-dead-letters.png"
        )
        await poison.get_by_test_id("dead-drop").click()
        await expect(rows).to_have_count(1)
        await rows.filter(has_text="handler failed 5 times").get_by_test_id("dead-requeue").click()
        await expect(rows).to_have_count(0)
        await expect(page.get_by_text("No dead letters.")).to_be_visible()
        arrived = page.get_by_test_id("rt-list").locator("tr", has_text="came-back")
        await expect(arrived).to_have_count(1)
        assert errors == []
    finally:
        await context.close()
    assert offline.blocked == []


LIVE_SERVICES = ("gateway", "roundtrip", "batch", "websocket", "store")


async def test_live_view_shows_a_killed_service_go_red_and_back_and_a_trace_waterfall(
    stack_with: StackFactory, browser: Browser
) -> None:
    """Every service green in the diagram; the roundtrip service killed turns red, restarted
    turns green; a traced roundtrip's id, clicked, draws spans from every hop, and a batch's
    from the gateway, the batch service and the store."""
    async with stack_with(trace_sample=1.0) as stack:
        offline = Offline()
        context = await offline.open(browser)
        try:
            page, errors = await new_page(context)
            await page.goto(stack.gateway_url + "/")
            panel = page.get_by_test_id("live-panel")
            await expect(panel).to_have_attribute("data-state", "open")

            def box(service: str) -> Any:
                return panel.locator(f'[data-testid="live-service"][data-service="{service}"]')

            for service in LIVE_SERVICES:
                await expect(box(service)).to_have_attribute("data-state", "up")
            await expect(panel.locator('[data-infra="broker"]')).to_have_attribute(
                "data-state", "up"
            )

            await stack.processes["roundtrip"].kill()
            await expect(box("roundtrip")).to_have_attribute("data-state", "down")
            await expect(box("store")).to_have_attribute("data-state", "up")
            await stack.restart("roundtrip")
            await expect(box("roundtrip")).to_have_attribute("data-state", "up")

            await page.get_by_label("Key", exact=True).fill("traced")
            await page.get_by_label("Value", exact=True).fill("through every hop")
            await page.get_by_test_id("rt-send").click()
            trace = page.get_by_test_id("live-traces").get_by_test_id("live-trace").first
            await trace.click()
            spans = page.get_by_test_id("live-waterfall").get_by_test_id("live-span")
            for service in ("gateway", "roundtrip", "store", "websocket"):
                await expect(
                    spans.and_(page.locator(f'[data-service="{service}"]')).first
                ).to_be_visible()
            await page.get_by_label("Size", exact=True).fill("5")
            await page.get_by_test_id("batch-send").click()
            await expect(page.get_by_test_id("batch-status")).to_have_text("Done")
            traces = page.get_by_test_id("live-traces").get_by_test_id("live-trace")
            await traces.filter(has_text="batch of 5").click()
            for service in ("gateway", "batch", "store"):
                await expect(
                    spans.and_(page.locator(f'[data-service="{service}"]')).first
                ).to_be_visible()
            latency = re.compile(r"^event [\d.]+/[\d.]+ ms$")  # handler p50/p99
            await expect(box("store").locator("text", has_text=latency)).to_have_count(1)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await panel.screenshot(path=SCREENSHOTS / "screenshot-live-view.png")
            assert errors == []
        finally:
            await context.close()
        assert offline.blocked == []
