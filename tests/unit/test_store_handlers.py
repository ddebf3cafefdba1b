"""The store's handlers (apps.store.handlers) on FastStream's TestRabbitBroker and
TestNatsBroker, and the real Redis: every test runs once per backend.

The handlers are the real ones, built as the service builds them; messages go in
on the namespaced channel names and what the store publishes onward is caught by
subscribers of the test's own on the broadcast channels and on the dead letters.

FastStream's test brokers deliver each message once, in the publisher's task:
they do not redeliver, dead-letter by themselves or persist. Where a test needs a
redelivery it publishes the same message again, as the broker would.
"""

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import pytest
from faststream.message import StreamMessage

from apps.store import timeouts
from apps.store.handlers import subscribe
from apps.store.timeouts import sweep_stalled_batches
from msarch import channels
from msarch.bus import CHANNEL_HEADER, EVENT_ID_HEADER, REASON_HEADER, Bus, PublishError
from msarch.channels import Channel
from msarch.events import EventType
from msarch.messages import BatchItem, BatchReply, BatchStatus, KeyValue, item_of
from msarch.service import Runtime
from msarch.storage import MessageState, Store
from tests.utils.broker import Incoming, InMemoryBroker, in_memory
from tests.utils.fixture_api import RuntimeFactory


@dataclass
class Caught:
    """A message the store published onward, as a subscriber received it."""

    body: Any
    message_id: str | None
    correlation_id: str | None
    headers: dict[str, Any]


@dataclass
class StoreHarness:
    runtime: Runtime
    wire: InMemoryBroker
    forwarded: list[Caught] = field(default_factory=list)
    replies: list[Caught] = field(default_factory=list)
    dead: dict[str, list[Caught]] = field(default_factory=dict)
    replied: asyncio.Event = field(default_factory=asyncio.Event)
    fail_forwards: int = 0
    """How many forward publishes fail next (the broadcast refusing them)."""

    @property
    def bus(self) -> Bus[Any]:
        return self.runtime.bus

    @property
    def store(self) -> Store:
        return self.runtime.store

    async def send(self, channel: Channel, body: Any, **options: Any) -> None:
        await self.wire.send(channel, body, **options)

    def caught(self, body: Any, message: StreamMessage[Any]) -> Caught:
        return Caught(
            body, self.wire.message_id(message), message.correlation_id, dict(message.headers)
        )

    def reply_statuses(self, batch_id: UUID) -> list[BatchStatus]:
        return [
            BatchReply.model_validate(c.body).status
            for c in self.replies
            if c.body["batch_id"] == str(batch_id)
        ]


def _catch(
    box: StoreHarness, into: list[Caught], arrived: asyncio.Event | None = None
) -> Callable[..., Any]:
    async def caught(body: Any, message: Incoming) -> None:
        into.append(box.caught(body, message))
        if arrived is not None:
            arrived.set()

    return caught


@pytest.fixture
async def harness(
    make_runtime: RuntimeFactory, backend: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StoreHarness]:
    runtime = make_runtime("store", backend=backend)
    subscribe(runtime)
    box = StoreHarness(runtime, in_memory(runtime.bus))
    box.wire.listen(channels.BATCH_REPLY, _catch(box, box.replies, box.replied))

    box.wire.listen(channels.FORWARD_ROUNDTRIP, _catch(box, box.forwarded))
    for channel in (channels.EVENT, channels.BATCH):
        box.dead[channel.name] = []
        box.wire.listen_dead(channel, _catch(box, box.dead[channel.name]))

    broker = runtime.bus.broker
    publish = broker.publish
    forward = runtime.bus.name(channels.FORWARD_ROUNDTRIP)

    async def refusing(message: Any, *args: Any, **options: Any) -> Any:
        # The broker refusing the publish: subject on NATS, fanout exchange on RabbitMQ.
        target = options.get("subject") or getattr(options.get("exchange"), "name", None)
        if target == forward and box.fail_forwards:
            box.fail_forwards -= 1
            raise ConnectionError("forward refused (simulated)")
        return await publish(message, *args, **options)

    async with box.wire:
        monkeypatch.setattr(broker, "publish", refusing)
        yield box


async def _logged(store: Store) -> list[EventType]:
    return [e.type for e in await store.read_events(limit=10_000)]


async def _marker(store: Store, kv: KeyValue) -> str | None:
    state = await store.redis.hget(store.keys.message(str(kv.id)), "state")
    return None if state is None else str(state)


# -- event: store, forward, mark --------------------------------------------------------


async def test_an_event_is_stored_forwarded_and_marked(harness: StoreHarness) -> None:
    kv = KeyValue(key="greeting", value="héllo 😀\x00")
    await harness.send(channels.EVENT, kv, message_id=str(kv.id), correlation_id="req-1")

    assert await harness.store.get_value("greeting") == kv.value
    assert await _marker(harness.store, kv) == MessageState.FORWARDED
    (event,) = await harness.store.read_events()
    assert (event.type, event.message_id, event.correlation_id) == (
        EventType.KeyValueStored,
        str(kv.id),
        "req-1",
    )
    (forwarded,) = harness.forwarded
    assert KeyValue.model_validate(forwarded.body) == kv
    assert (forwarded.message_id, forwarded.correlation_id) == (str(kv.id), "req-1")
    # The websocket service uses it to resume clients and to drop re-forwards.
    assert forwarded.headers[EVENT_ID_HEADER] == event.id


async def test_a_newer_producers_field_is_stored_and_forwarded_not_dead_lettered(
    harness: StoreHarness,
) -> None:
    body = {"id": str(uuid4()), "key": "k", "value": "v", "priority": 2}
    await harness.send(channels.EVENT, body, message_id=body["id"])

    assert harness.dead["event"] == []
    assert await harness.store.get_value("k") == "v"
    (event,) = await harness.store.read_events()
    assert event.payload["priority"] == 2
    (forwarded,) = harness.forwarded
    assert forwarded.body["priority"] == 2


async def test_a_repeated_event_is_neither_stored_nor_forwarded_again(
    harness: StoreHarness,
) -> None:
    kv = KeyValue(key="k", value="v")
    for _ in range(3):
        await harness.send(channels.EVENT, kv, message_id=str(kv.id))
    assert len(harness.forwarded) == 1
    assert await _logged(harness.store) == [EventType.KeyValueStored]


def _no_publish_retry(harness: StoreHarness) -> None:
    """A refused forward fails the handler at once (MSARCH_PUBLISH_RETRY_S=0)."""
    runtime = harness.runtime
    runtime.settings = runtime.settings.model_copy(update={"publish_retry_s": 0.0})


async def test_a_forward_refused_for_a_while_is_sent_again_by_the_same_delivery(
    harness: StoreHarness,
) -> None:
    """A stream or queue without a leader refuses a publish at once: the store sends it again
    within MSARCH_PUBLISH_RETRY_S rather than spend a delivery on each refusal."""
    kv = KeyValue(key="k", value="v")
    harness.fail_forwards = 3
    await harness.send(channels.EVENT, kv, message_id=str(kv.id))  # one delivery, no raise
    assert [KeyValue.model_validate(c.body) for c in harness.forwarded] == [kv]
    assert await _marker(harness.store, kv) == MessageState.FORWARDED
    assert harness.dead["event"] == []


async def test_a_failed_forward_fails_the_handler_and_the_redelivery_forwards(
    harness: StoreHarness,
) -> None:
    kv = KeyValue(key="k", value="v")
    harness.fail_forwards = 1
    _no_publish_retry(harness)
    # The handler fails, so the message is not acked: the broker would redeliver it.
    with pytest.raises(PublishError, match="forward_roundtrip"):
        await harness.send(channels.EVENT, kv, message_id=str(kv.id))
    assert harness.forwarded == []
    assert await harness.store.get_value("k") == "v"
    assert await _marker(harness.store, kv) == MessageState.STORED

    await harness.send(channels.EVENT, kv, message_id=str(kv.id))  # the redelivery
    assert [KeyValue.model_validate(c.body) for c in harness.forwarded] == [kv]
    assert await _marker(harness.store, kv) == MessageState.FORWARDED
    (event,) = await harness.store.read_events()
    assert event.type is EventType.KeyValueStored
    # Re-forwarded with the event id of the first write: clients see it once.
    assert harness.forwarded[0].headers[EVENT_ID_HEADER] == event.id
    assert harness.dead["event"] == []


async def test_a_handler_failing_at_the_delivery_limit_is_dead_lettered(
    harness: StoreHarness,
) -> None:
    kv = KeyValue(key="k", value="v")
    limit = harness.runtime.settings.delivery_limit
    harness.fail_forwards = 1
    _no_publish_retry(harness)
    await harness.send(channels.EVENT, kv, message_id=str(kv.id), delivery=limit)
    (dead,) = harness.dead["event"]
    assert KeyValue.model_validate(dead.body) == kv
    assert dead.headers[REASON_HEADER].startswith(f"handler failed {limit} times")
    assert "forward refused" in dead.headers[REASON_HEADER]
    assert dead.headers[CHANNEL_HEADER] == harness.bus.name(channels.EVENT)


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b'{"key": "k"',
        {"key": "k"},
        {"id": "not-a-uuid", "key": "k", "value": "v"},
        {"key": "", "value": "v"},
        {"key": "k" * 513, "value": "v"},
        {"key": "k", "value": "é" * 40_000},
    ],
    ids=[
        "not-json",
        "truncated-json",
        "no-value",
        "bad-id",
        "empty-key",
        "key-513",
        "value-over-64KiB",
    ],
)
async def test_a_poison_event_is_dead_lettered_with_its_reason(
    harness: StoreHarness, body: Any
) -> None:
    await harness.send(channels.EVENT, body, message_id="poison-1")

    (dead,) = harness.dead["event"]
    assert dead.body == body
    assert dead.headers[REASON_HEADER].startswith("invalid message:")
    assert dead.headers[CHANNEL_HEADER] == harness.bus.name(channels.EVENT)
    assert harness.forwarded == []
    assert await _logged(harness.store) == []


# -- batch: assemble, commit, reply ---------------------------------------------------------


async def test_items_in_any_order_with_duplicates_commit_once_and_reply_done(
    harness: StoreHarness,
) -> None:
    batch_id, size = uuid4(), 12
    order = [*range(size), 3, 7, 0]
    random.Random(7).shuffle(order)
    last = max(order.index(i) for i in range(size))
    for position, index in enumerate(order):
        await harness.send(channels.BATCH, item_of(batch_id, index, size), correlation_id="b-1")
        expected = [] if position < last else [BatchStatus.Done] * (position - last + 1)
        assert harness.reply_statuses(batch_id) == expected, position

    first = harness.replies[0]
    assert (first.message_id, first.correlation_id) == (f"{batch_id}:Done", "b-1")
    assert [kv async for kv in harness.store.iter_batch_values(batch_id)] == [
        (f"{batch_id}_key_{i}", f"{batch_id}_value_{i}") for i in range(size)
    ]
    assert await harness.store.list_batches() == [str(batch_id)]
    assert (await _logged(harness.store)).count(EventType.BatchCommitted) == 1


async def test_an_item_contradicting_its_batch_makes_it_invalid(harness: StoreHarness) -> None:
    batch_id = uuid4()
    await harness.send(channels.BATCH, item_of(batch_id, 0, 3))
    await harness.send(channels.BATCH, item_of(batch_id, 1, 5))

    (reply,) = [BatchReply.model_validate(c.body) for c in harness.replies]
    assert (reply.batch_id, reply.status) == (batch_id, BatchStatus.Invalid)
    assert reply.detail == "an item says size 5, the batch has size 3"
    # The missing items arriving later change nothing; each one answers Invalid again.
    for index in (1, 2):
        await harness.send(channels.BATCH, item_of(batch_id, index, 3))
    assert harness.reply_statuses(batch_id) == [BatchStatus.Invalid] * 3
    assert await harness.store.batch_size(batch_id) is None


async def test_an_out_of_range_index_makes_the_batch_invalid(harness: StoreHarness) -> None:
    batch_id = uuid4()
    bad = BatchItem(batch_id=batch_id, index=4, size=4, key="k", value="v")
    await harness.send(channels.BATCH, bad)
    (reply,) = [BatchReply.model_validate(c.body) for c in harness.replies]
    assert reply.status is BatchStatus.Invalid
    assert reply.detail == "index 4 is outside 0..3"


async def test_a_poison_batch_item_is_dead_lettered(harness: StoreHarness) -> None:
    body = {"batch_id": str(uuid4()), "index": -1, "size": 2, "key": "k", "value": "v"}
    await harness.send(channels.BATCH, body)
    (dead,) = harness.dead["batch"]
    assert dead.body == body
    assert dead.headers[REASON_HEADER].startswith("invalid message:")
    assert harness.replies == []


# On RabbitMQ only: TestNatsBroker hands a batch subscriber one message a call, where the NATS
# server hands it a fetch (test_bus_batches.py shows that on the real server).
@pytest.mark.parametrize("backend", ["rabbit"], indirect=True)
async def test_concurrent_items_of_interleaved_batches_are_coalesced_and_complete(
    harness: StoreHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = harness.store
    calls: list[int] = []
    stage_items = store.stage_items

    async def counting(items: list[BatchItem], correlation_id: str | None = None) -> Any:
        calls.append(len(items))
        return await stage_items(items, correlation_id)

    monkeypatch.setattr(store, "stage_items", counting)
    sizes = {uuid4(): 40, uuid4(): 25, uuid4(): 1}
    items = [item_of(bid, i, size) for bid, size in sizes.items() for i in range(size)]
    random.Random(11).shuffle(items)

    await asyncio.gather(*(harness.send(channels.BATCH, item) for item in items))

    assert sum(calls) == len(items)
    assert len(calls) < len(items), "items that arrive together are staged together"
    for bid, size in sizes.items():
        statuses = harness.reply_statuses(bid)
        assert statuses
        assert set(statuses) == {BatchStatus.Done}
        assert await store.batch_size(bid) == size
    assert sorted(await store.list_batches()) == sorted(str(b) for b in sizes)


async def test_a_stalled_batch_times_out_and_replies(
    harness: StoreHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeouts, "SWEEP_INTERVAL_S", 0.02)
    runtime = harness.runtime
    runtime.settings = runtime.settings.model_copy(update={"assembly_timeout_s": 0.05})
    batch_id = uuid4()
    await harness.send(channels.BATCH, item_of(batch_id, 0, 2))

    sweeper = asyncio.create_task(sweep_stalled_batches(runtime))
    try:
        await asyncio.wait_for(harness.replied.wait(), 10)
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)

    (reply,) = [BatchReply.model_validate(c.body) for c in harness.replies]
    assert (reply.batch_id, reply.status) == (batch_id, BatchStatus.TimeoutExceeded)
    assert reply.detail == "received 1 of 2 items, then none for 0.05 s"
    assert harness.replies[0].message_id == f"{batch_id}:TimeoutExceeded"

    # The missing item, arriving too late, is not stored: it answers TimeoutExceeded again.
    await harness.send(channels.BATCH, item_of(batch_id, 1, 2))
    assert harness.reply_statuses(batch_id) == [BatchStatus.TimeoutExceeded] * 2
    assert await harness.store.batch_size(batch_id) is None
