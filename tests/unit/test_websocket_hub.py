"""The websocket service: the hub's fan-out and catch-up, its routes, its subscriber."""

import asyncio
import json
from typing import Any, cast

import httpx
import pytest
from fastapi import WebSocket

from apps.websocket import hub as hub_module
from apps.websocket.handlers import frame_of, subscribe
from apps.websocket.hub import Hub, position
from apps.websocket.routes import router, ws
from msarch import channels
from msarch.bus import EVENT_ID_HEADER
from msarch.messages import KeyValue
from msarch.problems import PROBLEM_JSON
from msarch.service import Runtime, create_service
from msarch.settings import Settings
from msarch.storage import Store
from tests.utils.broker import in_memory
from tests.utils.fixture_api import RuntimeFactory


class FakeSocket:
    """Stands in for a starlette WebSocket: records frames; can be slow, broken or gated."""

    def __init__(self, *, slow: bool = False, broken: bool = False):
        self.frames: list[str] = []
        self.accepted = False
        self.closed_with: int | None = None
        self.slow = slow
        self.broken = broken
        self.leave = asyncio.Event()
        self.gate: asyncio.Event | None = None
        """When set, the first frame waits for it (a client slow during catch-up)."""
        self.waiting = asyncio.Event()
        self.listening = asyncio.Event()
        self.sent = asyncio.Event()
        self.says: dict[str, Any] | None = None
        """What the client sends when it stops listening (None: it leaves)."""
        self.closed_because: str | None = None

    async def accept(self) -> None:
        self.accepted = True

    async def send_text(self, text: str) -> None:
        if self.broken:
            raise RuntimeError("connection reset (simulated)")
        if self.slow:
            await asyncio.Event().wait()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            self.waiting.set()
            await gate.wait()
        self.frames.append(text)
        self.sent.set()

    async def receive(self) -> dict[str, Any]:
        self.listening.set()
        await self.leave.wait()
        return self.says or {"type": "websocket.disconnect", "code": 1000}

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code
        self.closed_because = reason

    @property
    def ids(self) -> list[str | None]:
        return [json.loads(frame).get("event_id") for frame in self.frames]


def _ws(socket: FakeSocket) -> WebSocket:
    return cast(WebSocket, socket)


@pytest.fixture
def fast_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(hub_module, "SEND_TIMEOUT_S", 0.05)
    return 0.05


def _frame(event_id: str | None, key: str = "k") -> str:
    return json.dumps({"key": key, "event_id": event_id})


# -- the hub ---------------------------------------------------------------------------


async def test_push_reaches_every_live_client() -> None:
    hub = Hub()
    sockets = [FakeSocket() for _ in range(3)]
    for socket in sockets:
        hub.join(_ws(socket), catching_up=False)
    assert await hub.push(_frame("1-0"), "1-0") == 3
    assert await hub.push(_frame("1-1"), "1-1") == 3
    await hub.flush()
    assert all(s.ids == ["1-0", "1-1"] for s in sockets)
    assert len(hub) == 3


async def test_push_with_no_client_sends_nothing() -> None:
    assert await Hub().push("{}", None) == 0


async def test_the_same_event_pushed_twice_is_sent_once() -> None:
    # The store re-forwards after a crash between its write and its ack.
    hub = Hub()
    socket = FakeSocket()
    hub.join(_ws(socket), catching_up=False)
    assert await hub.push(_frame("5-0"), "5-0") == 1
    assert await hub.push(_frame("5-0"), "5-0") == 0
    await hub.flush()
    assert socket.ids == ["5-0"]


async def test_frames_without_an_event_id_are_always_sent() -> None:
    hub = Hub()
    socket = FakeSocket()
    hub.join(_ws(socket), catching_up=False)
    await hub.push(_frame(None), None)
    await hub.push(_frame(None), None)
    await hub.flush()
    assert socket.ids == [None, None]


async def test_the_memory_of_pushed_events_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "RECENT_EVENTS", 3)
    hub = Hub()
    socket = FakeSocket()
    hub.join(_ws(socket), catching_up=False)
    for ms in range(5):
        await hub.push(_frame(f"{ms}-0"), f"{ms}-0")
    assert len(hub._recent) == 3
    assert await hub.push(_frame("0-0"), "0-0") == 1  # forgotten, so sent again
    assert await hub.push(_frame("4-0"), "4-0") == 0  # remembered


async def test_a_slow_client_is_dropped_and_does_not_hold_up_the_others(
    fast_timeout: float,
) -> None:
    hub = Hub()
    slow, quick = FakeSocket(slow=True), FakeSocket()
    hub.join(_ws(slow), catching_up=False)
    hub.join(_ws(quick), catching_up=False)

    async with asyncio.timeout(fast_timeout * 2):  # a push waits for no client
        assert await hub.push(_frame("1-0"), "1-0") == 2
    await asyncio.wait_for(quick.sent.wait(), 1)
    assert quick.ids == ["1-0"]
    async with asyncio.timeout(fast_timeout * 40):
        await hub.flush()
    assert slow.closed_with == 1011
    assert len(hub) == 1
    assert await hub.push(_frame("2-0"), "2-0") == 1


async def test_a_client_too_far_behind_is_disconnected_saying_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame_size = len(_frame("0-0").encode())
    monkeypatch.setattr(hub_module, "OUTBOX_BYTES", 4 * frame_size)
    monkeypatch.setattr(hub_module, "OUTBOX_FRAMES", 2)
    hub = Hub()
    stalled, reading = FakeSocket(), FakeSocket()
    stalled.gate = asyncio.Event()  # it reads nothing
    hub.join(_ws(stalled), catching_up=False)
    hub.join(_ws(reading), catching_up=False)
    sent = []
    for n in range(7):
        sent.append(await hub.push(_frame(f"{n}-0"), f"{n}-0"))
        await asyncio.sleep(0.001)  # as between two messages: the writers run
    await hub.flush()
    # four frames' worth: one being sent (it never is), three waiting; the 5th is too many
    assert sent == [2, 2, 2, 2, 1, 1, 1]
    assert stalled.closed_with == 1008
    assert stalled.closed_because == f"too slow: {4 * frame_size} bytes of frames behind"
    assert reading.ids == [f"{n}-0" for n in range(7)]
    assert len(hub) == 1


async def test_a_client_that_reads_keeps_up_with_pushes_from_many_handler_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on RabbitMQ, a handler task per delivered message: here 64 push at each turn of the
    # loop, 512 in all. The client's writer must send what is queued at its turn, or the
    # pushes outrun it and a client that reads is cut off as too slow.
    monkeypatch.setattr(hub_module, "OUTBOX_BYTES", 1)
    monkeypatch.setattr(hub_module, "OUTBOX_FRAMES", 128)
    hub = Hub()
    socket = FakeSocket()
    hub.join(_ws(socket), catching_up=False)

    async def handler(n: int) -> int:
        for _ in range(n // 64):
            await asyncio.sleep(0)
        return await hub.push(_frame(f"{n}-0"), f"{n}-0")

    sent = await asyncio.gather(*(handler(n) for n in range(512)))
    await hub.flush()
    assert sent == [1] * 512
    assert socket.closed_with is None
    assert socket.ids == [f"{n}-0" for n in range(512)]


async def test_a_client_catching_up_holds_a_bounded_number_of_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_module, "OUTBOX_BYTES", 3 * len(_frame("0-0").encode()))
    monkeypatch.setattr(hub_module, "OUTBOX_FRAMES", 1)
    hub = Hub()
    socket = FakeSocket()
    hub.join(_ws(socket), catching_up=True)
    sent = [await hub.push(_frame(f"{n}-0"), f"{n}-0") for n in range(4)]
    await hub.flush()
    assert sent == [1, 1, 1, 0]
    assert socket.closed_with == 1008
    assert len(hub) == 0


async def test_a_broken_client_is_dropped_and_closed() -> None:
    hub = Hub()
    broken, fine = FakeSocket(broken=True), FakeSocket()
    hub.join(_ws(broken), catching_up=False)
    hub.join(_ws(fine), catching_up=False)
    assert await hub.push(_frame("1-0"), "1-0") == 2
    await hub.flush()
    assert broken.closed_with == 1011
    assert fine.ids == ["1-0"]
    assert len(hub) == 1


async def test_a_client_that_fails_to_close_is_still_dropped() -> None:
    class Unclosable(FakeSocket):
        async def close(self, code: int = 1000, reason: str | None = None) -> None:
            raise RuntimeError("already gone")

    hub = Hub()
    hub.join(_ws(Unclosable(broken=True)), catching_up=False)
    assert await hub.push(_frame("1-0"), "1-0") == 1
    await hub.flush()
    assert len(hub) == 0


async def test_leaving_twice_is_harmless() -> None:
    hub = Hub()
    client = hub.join(_ws(FakeSocket()), catching_up=False)
    hub.leave(client)
    hub.leave(client)
    assert len(hub) == 0


async def test_frames_during_catch_up_are_held_then_sent_without_duplicates() -> None:
    hub = Hub()
    socket = FakeSocket()
    client = hub.join(_ws(socket), catching_up=True)
    # Live frames arrive while the log is being read: 7-0 the log gives too, 9-0 it does not.
    assert await hub.push(_frame("7-0"), "7-0") == 1  # held
    assert await hub.push(_frame("9-0"), "9-0") == 1
    assert socket.frames == []

    await client.send(_frame("7-0"))  # what the catch-up sent from the log
    await hub.go_live(client, "7-0")
    await hub.flush()
    assert socket.ids == ["7-0", "9-0"]

    await hub.push(_frame("10-0"), "10-0")
    await hub.push(_frame("6-5"), "6-5")  # before the catch-up point: the log gave it
    await hub.flush()
    assert socket.ids == ["7-0", "9-0", "10-0"]


def test_event_positions_compare_as_numbers() -> None:
    assert position("1700000000000-0") == (1700000000000, 0)
    assert position("5-3") < position("5-10") < position("6-0")
    assert position("10-0") > position("9-99")
    assert position("42") == (42, 0)


# -- the route -----------------------------------------------------------------------------


@pytest.fixture
def runtime(make_runtime: RuntimeFactory) -> Runtime:
    """The websocket service's Runtime, its Hub included, as create_service builds it."""
    return make_runtime("websocket", [Hub])


async def test_the_route_joins_while_connected_and_leaves_on_disconnect(runtime: Runtime) -> None:
    socket, hub = FakeSocket(), runtime.dependency(Hub)
    session = asyncio.create_task(ws(_ws(socket), runtime, hub))
    try:
        await asyncio.wait_for(socket.listening.wait(), 2)
        assert socket.accepted
        assert len(hub) == 1
        await hub.push(_frame(None, "live"), None)
        await hub.flush()
        assert [json.loads(f)["key"] for f in socket.frames] == ["live"]
    finally:
        socket.leave.set()
        await asyncio.wait_for(session, 2)
    assert len(hub) == 0


@pytest.mark.parametrize(
    ("says", "code"),
    [({"type": "websocket.receive", "text": "hello"}, 1008),
     ({"type": "websocket.receive", "bytes": b"\x00"}, 1003)],
)  # fmt: skip
async def test_a_client_that_sends_a_frame_is_told_and_closed(
    runtime: Runtime, says: dict[str, Any], code: int
) -> None:
    socket, hub = FakeSocket(), runtime.dependency(Hub)
    socket.says = says
    socket.leave.set()
    await asyncio.wait_for(ws(_ws(socket), runtime, hub), 2)
    assert socket.closed_with == code
    assert socket.closed_because == "this socket only sends: clients send no frames"
    assert len(hub) == 0


@pytest.mark.parametrize(
    "after", ["", "abc", "1-2-3", "1700000000000-0; DROP", "-1", "18446744073709551616-0"]
)
async def test_the_route_refuses_a_malformed_after(runtime: Runtime, after: str) -> None:
    socket, hub = FakeSocket(), runtime.dependency(Hub)
    await asyncio.wait_for(ws(_ws(socket), runtime, hub, after=after), 2)
    assert socket.closed_with == 1008
    assert len(hub) == 0


async def test_a_resuming_client_gets_the_missed_events_then_live_ones_no_gap_no_duplicate(
    runtime: Runtime,
) -> None:
    store, hub = runtime.store, runtime.dependency(Hub)
    kvs = [KeyValue(key=f"k{i}", value=f"v{i}") for i in range(4)]
    traces = [f"{i:032x}" for i in range(4)]
    ids = [(await store.store_key_value(kv, None, t))[1] for kv, t in zip(kvs, traces, strict=True)]
    socket = FakeSocket()
    gate = socket.gate = asyncio.Event()  # the first catch-up frame is slow to go out
    session = asyncio.create_task(ws(_ws(socket), runtime, hub, after=ids[0]))
    try:
        await asyncio.wait_for(socket.waiting.wait(), 2)
        # While it catches up: a re-forward of a logged event, and a new one.
        await hub.push(frame_of(kvs[2], ids[2]), ids[2])
        late = KeyValue(key="late", value="x")
        _, late_id = await store.store_key_value(late)
        await hub.push(frame_of(late, late_id), late_id)
        gate.set()
        await asyncio.wait_for(socket.listening.wait(), 2)  # caught up and live
        await hub.flush()
        assert socket.ids == [*ids[1:], late_id]
        frames = [json.loads(f) for f in socket.frames]
        assert [f["key"] for f in frames] == ["k1", "k2", "k3", "late"]
        assert [f["trace_id"] for f in frames[:3]] == traces[1:], "replayed: their requests'"
        assert (
            KeyValue.model_validate(
                {k: v for k, v in frames[0].items() if k not in ("event_id", "trace_id")}
            )
            == (kvs[1])
        )
    finally:
        socket.leave.set()
        await asyncio.wait_for(session, 2)
    assert len(hub) == 0


# -- GET /api/events ---------------------------------------------------------------------


@pytest.fixture
async def events_client(unit_settings: Settings, store: Store) -> Any:
    # Depends on `store`: its teardown removes what the app wrote in the namespace.
    app = create_service("websocket", routers=[router], settings=unit_settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://websocket") as client:
        yield client, app.state.runtime.store
    await app.state.runtime.store.close()


async def test_events_are_paged_oldest_first(events_client: Any) -> None:
    client, store = events_client
    ids = [(await store.store_key_value(KeyValue(key=f"k{i}", value="v")))[1] for i in range(5)]

    first = await client.get("/api/events", params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [e["id"] for e in page["events"]] == ids[:2]
    assert page["next_after"] == ids[1]

    rest = (await client.get("/api/events", params={"after": ids[1], "limit": 10})).json()
    assert [e["payload"]["key"] for e in rest["events"]] == ["k2", "k3", "k4"]
    assert rest["next_after"] is None


@pytest.mark.parametrize(
    "params", [{"after": "yesterday"}, {"limit": 0}, {"limit": 1001}, {"limit": "ten"}]
)
async def test_bad_event_queries_are_422_problems(
    events_client: Any, params: dict[str, Any]
) -> None:
    client, _ = events_client
    answer = await client.get("/api/events", params=params)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert answer.json()["title"] == "Invalid input"


# -- the forward_roundtrip subscriber ----------------------------------------------------------


async def test_a_forwarded_key_value_reaches_the_clients_once_with_its_event_id(
    make_runtime: RuntimeFactory, backend: str
) -> None:
    runtime = make_runtime("websocket", [Hub], backend=backend)
    hub = runtime.dependency(Hub)
    subscribe(runtime)
    sockets = [FakeSocket(), FakeSocket()]
    clients = [hub.join(_ws(s), catching_up=False) for s in sockets]
    kv = KeyValue(key="ключ 🔑", value="\u200fשלום\x00 e\u0301")
    event_id = f"{1_700_000_000_000 + id(kv) % 1000}-{id(kv) % 97}"
    try:
        async with in_memory(runtime.bus) as wire:
            for _ in range(2):  # the second is a re-forward of the same event
                await wire.send(
                    channels.FORWARD_ROUNDTRIP,
                    kv,
                    message_id=str(kv.id),
                    headers={EVENT_ID_HEADER: event_id},
                )
        await hub.flush()
    finally:
        for client in clients:
            hub.leave(client)

    for socket in sockets:
        (frame,) = socket.frames
        body = json.loads(frame)
        assert body.pop("event_id") == event_id
        # The trace of the publish that sent it: none here, outside any request.
        assert body.pop("trace_id") is None
        assert KeyValue.model_validate(body) == kv
        assert set(body) == {"id", "key", "value", "accepted_at"}
