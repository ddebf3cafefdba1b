"""The gateway as an edge (issue 13), on a stack whose gateway runs from a configuration file:
rate limits shared by two gateway instances under load and kept across a restart, a websocket
connection budget, CORS for a client served from another origin (Chromium); and on the shared
stack, a websocket client that does not read."""

import asyncio
import functools
import http.server
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from playwright.async_api import Browser, expect

from apps.websocket.hub import OUTBOX_BYTES, OUTBOX_FRAMES
from bench.memory import rss_kib
from msarch.testing.load import RoundtripLoad
from msarch.testing.stack import Stack, pid_of, stack_factory, wait_for, ws_frames
from tests.utils.browser import chromium
from tests.utils.figures import Figures
from tests.utils.hostile import StalledSocket

pytestmark = pytest.mark.e2e

BUDGET, PERIOD_S = 40, 2.0  # /api/roundtrip: 40 per 2 s a client, refilled at 20/s
KEPT = 5  # /api/events: 5 per 10 minutes, so nothing refills while a gateway restarts
CONNECTIONS = 3  # /ws: 3 connections opened per client per 10 minutes
LOAD_S = 4.0


def config(origin: str) -> str:
    return f"""
[[routes]]
prefix = "/api/roundtrip"
service = "roundtrip"
rate_limit = {{ requests = {BUDGET}, period_s = {PERIOD_S} }}

[[routes]]
prefix = "/api/batch"
service = "batch"
timeout_s = 40

[[routes]]
prefix = "/api/events"
service = "websocket"
rate_limit = {{ requests = {KEPT}, period_s = 600 }}

[[routes]]
prefix = "/ws"
service = "websocket"
rate_limit = {{ requests = {CONNECTIONS}, period_s = 600 }}

[cors]
allow_origins = ["{origin}"]
allow_methods = ["GET", "POST"]
"""


PAGE = """<!doctype html><meta charset="utf-8"><title>another origin</title>
<output id="result">waiting</output>
<script>
fetch("{gateway}/api/roundtrip", {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                  body: JSON.stringify({{key: "cors", value: location.origin}})}})
  .then(r => r.json().then(body =>
    `${{r.status}} ${{body.key}} ${{r.headers.get("x-request-id") ? "id" : "no id"}}`))
  .catch(e => `blocked: ${{e.name}}`)
  .then(text => {{ document.getElementById("result").textContent = text; }});
</script>
"""


@pytest.fixture(scope="module")
def origins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """Two static servers on one folder: the origin the gateway allows, and one it does not."""
    folder = tmp_path_factory.mktemp("origin")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    servers = {
        name: http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        for name in ("allowed", "other")
    }
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield (
            folder,
            {name: f"http://127.0.0.1:{s.server_address[1]}" for name, s in servers.items()},
        )
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
async def edge(
    backend: str, origins: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """A stack whose gateway reads the file above, and a second gateway instance."""
    folder, urls = origins
    path = tmp_path_factory.mktemp("gateway") / "gateway.toml"
    path.write_text(config(urls["allowed"]))
    async with stack_factory(backend)(gateway_config=str(path)) as stack:
        await stack.add_instance("gateway")
        (folder / "index.html").write_text(PAGE.format(gateway=stack.gateway_url))
        yield stack


def gateways(stack: Stack) -> list[str]:
    return [stack.gateway_url, *(p.url for p in stack.extra if p.service == "gateway")]


async def test_two_gateways_hold_a_client_to_one_budget_under_load(
    edge: Stack, figures: Figures
) -> None:
    urls = gateways(edge)
    answers: list[tuple[int, str, httpx.Headers]] = []
    headers = {"X-API-Key": "load-client"}  # the budget is the key's, whichever gateway
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=32)) as client:

        async def worker(number: int) -> None:
            sent = 0
            while time.monotonic() < deadline:
                url = urls[(number + sent) % len(urls)]
                answer = await client.post(
                    f"{url}/api/roundtrip", json={"key": f"rl-{number}", "value": str(sent)},
                    headers=headers,
                )  # fmt: skip
                answers.append((answer.status_code, url, answer.headers))
                sent += 1

        started = time.monotonic()
        deadline = started + LOAD_S
        await asyncio.gather(*(worker(n) for n in range(16)))
        elapsed = time.monotonic() - started
    statuses = Counter(status for status, _, _ in answers)
    by_gateway = Counter((url, status) for status, url, _ in answers)
    expected = BUDGET + elapsed * BUDGET / PERIOD_S
    accepted = statuses[202]
    figures(
        requests=len(answers),
        accepted=accepted,
        refused=statuses[429],
        expected=round(expected, 1),
        accuracy=round(accepted / expected, 3),
        per_second=round(len(answers) / elapsed),
        by_gateway={
            f"{url.rsplit(':', 1)[1]}:{s}": n for (url, s), n in sorted(by_gateway.items())
        },
    )
    assert set(statuses) == {202, 429}, statuses
    assert 0.9 * expected <= accepted <= expected + 1, "the budget, not twice it, not less"
    assert all(by_gateway[(url, 202)] and by_gateway[(url, 429)] for url in urls)
    for status, _, answer_headers in answers:
        assert answer_headers["RateLimit-Policy"] == f'"api-roundtrip";q={BUDGET};w=2'
        assert answer_headers["RateLimit"].startswith('"api-roundtrip";r=')
        if status == 429:
            assert int(answer_headers["Retry-After"]) >= 1
            assert answer_headers["content-type"] == "application/problem+json"


async def test_a_restarted_gateway_does_not_reset_a_budget(edge: Stack) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        headers = {"X-API-Key": "restart-client"}
        used = [
            (await client.get(f"{edge.gateway_url}/api/events", headers=headers)).status_code
            for _ in range(KEPT)
        ]
        await edge.restart("gateway")
        after = await client.get(f"{edge.gateway_url}/api/events", headers=headers)
        other = await client.get(f"{edge.gateway_url}/api/events", headers={"X-API-Key": "new"})
    assert used == [200] * KEPT
    assert after.status_code == 429, after.text
    assert "rate limit" in after.json()["detail"]
    assert other.status_code == 200, "another client has a budget of its own"


async def test_a_client_gets_its_budget_of_websocket_connections(edge: Stack) -> None:
    url = edge.gateway_url.replace("http://", "ws://", 1) + "/ws?api_key=ws-client"
    opened = [await websockets.connect(url) for _ in range(CONNECTIONS)]
    try:
        refused = await websockets.connect(url)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(refused.recv(), 10)
    finally:
        for socket in opened:
            await socket.close()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1013
    assert "retry after" in closed.value.rcvd.reason


async def test_cors_preflight_and_answers(
    edge: Stack, origins: tuple[Path, dict[str, str]]
) -> None:
    origin = origins[1]["allowed"]
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}  # fmt: skip
    async with httpx.AsyncClient(timeout=30) as client:
        allowed = await client.options(
            f"{edge.gateway_url}/api/roundtrip", headers={"Origin": origin, **preflight}
        )
        refused = await client.options(
            f"{edge.gateway_url}/api/roundtrip",
            headers={"Origin": "http://elsewhere.example", **preflight},
        )
        answer = await client.get(
            f"{edge.gateway_url}/api/batch/batchkeys", headers={"Origin": origin}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == origin
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == origin
    assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


async def test_a_page_from_another_origin_calls_the_api_only_when_allowed(
    edge: Stack, browser: Browser, origins: tuple[Path, dict[str, str]]
) -> None:
    pages = origins[1]
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(pages["allowed"] + "/index.html")
        await expect(page.locator("#result")).to_have_text("202 cors id", timeout=20_000)
        await page.goto(pages["other"] + "/index.html")
        await expect(page.locator("#result")).to_have_text("blocked: TypeError", timeout=20_000)
    finally:
        await context.close()


SLOW_ROUNDTRIPS, SLOW_VALUE = 1_500, 16 * 1024  # 24 MiB of frames: more than any buffer holds


async def test_a_client_that_does_not_read_is_disconnected_and_the_others_get_everything(
    stack: Stack, figures: Figures
) -> None:
    """A client that stops reading (a 4 KiB receive buffer, never read) while 24 MiB of frames
    go out: the websocket service disconnects it with 1008 once it is too far behind, a reading
    client gets every frame, and the service's memory does not follow the backlog."""
    reading: list[dict[str, object]] = []
    ready = asyncio.Event()
    # Both at the service, whose policy this is (through the gateway, the gateway's own
    # connection is the service's client, with the gateway's buffers on top).
    service = stack.settings.url_of("websocket").replace("http://", "ws://", 1) + "/ws"
    reader = asyncio.create_task(ws_frames(service, reading, ready))
    pid = pid_of(stack.processes["websocket"])
    idle_rss, peak_rss = rss_kib(pid), 0
    try:
        async with StalledSocket(service) as stalled:
            await asyncio.wait_for(ready.wait(), 10)
            load = RoundtripLoad(
                stack.gateway_url, f"stall-{uuid.uuid4().hex[:6]}", value=lambda _: "v" * SLOW_VALUE
            )
            started = time.monotonic()
            running = asyncio.create_task(load.run(count=SLOW_ROUNDTRIPS))
            while not running.done():
                peak_rss = max(peak_rss, rss_kib(pid))
                await asyncio.sleep(0.1)
            await running
            ids = set(load.confirmed)
            await wait_for(lambda: reader.done() or ids <= {f["id"] for f in reading}, 60)
            assert not reader.done(), f"the reading client was let go: {reader.exception()!r}"
            got, got_bytes, ended = await stalled.drain()
            seconds = time.monotonic() - started
            clients = await _websocket_clients(stack)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    figures(
        accepted=load.accepted,
        frames_to_reader=len(reading),
        stalled_got_frames=got,
        stalled_got_mib=round(got_bytes / 2**20, 1),
        outbox=(f"{OUTBOX_BYTES / 2**20:g} MiB", OUTBOX_FRAMES),
        ended=ended,
        websocket_rss_mib=(round(idle_rss / 1024, 1), round(peak_rss / 1024, 1)),
        seconds=round(seconds, 1),
    )
    assert load.accepted == SLOW_ROUNDTRIPS
    # It reads nothing, so the close frame (1008 "too slow: ...") waits behind what its buffers
    # hold; the server ends the connection when the close handshake times out.
    assert ended == "reset" or ended.startswith(("eof", "close 1008 too slow: ")), ended
    assert clients == 1, "the service let the stalled client go, and kept the reading one"
    assert got < load.accepted, "it got what was in flight before it was cut off, not everything"
    assert peak_rss - idle_rss < 50 * 1024, "the backlog is not held in the service"


async def _websocket_clients(stack: Stack) -> float:
    """The websocket service's msarch_websocket_clients gauge."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(stack.settings.url_of("websocket") + "/metrics")).text
    [line] = [x for x in text.splitlines() if x.startswith("msarch_websocket_clients ")]
    return float(line.split()[1])
