"""bus.batch_subscriber on the real brokers: many messages a handler call, each settled by its
own outcome (msarch.bus.batches). NATS hands over what its pull consumer fetched; RabbitMQ
the deliveries handled concurrently. Each test has a namespace of its own, deleted after."""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import uuid4

import aiormq
import pytest
from aio_pika import connect_robust

from msarch import channels
from msarch.bus import Bus, create_bus, rabbit
from msarch.bus.batches import Outcome, Received
from msarch.bus.rabbit import RabbitBus
from msarch.messages import BatchItem, item_of
from msarch.settings import Settings
from msarch.testing.isolation import delete_namespace, isolated_settings
from msarch.testing.stack import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ITEMS = 600


@pytest.fixture(params=["rabbit", "nats"])
async def settings(request: pytest.FixtureRequest) -> AsyncIterator[Settings]:
    chosen = isolated_settings(request.param, delivery_limit=3)
    try:
        yield chosen
    finally:
        await delete_namespace(chosen.namespace)


async def _started(settings: Settings, handler: "BatchHandlerSpy") -> Bus[Any]:
    bus = create_bus(settings, service="store")
    bus.batch_subscriber(channels.BATCH)(handler)
    await bus.connect()
    return bus


class BatchHandlerSpy:
    """Records each call's size and each item's deliveries; fails the items it is told to."""

    def __init__(self, failing: set[int] | None = None, write_s: float = 0) -> None:
        self.calls: list[int] = []
        self.seen: Counter[int] = Counter()
        self.failing = failing or set()
        self.write_s = write_s
        """How long each call takes, as the store's Redis write does."""

    async def __call__(self, received: list[Received]) -> Sequence[Outcome]:
        self.calls.append(len(received))
        await asyncio.sleep(self.write_s)
        outcomes: list[Outcome] = []
        for one in received:
            assert isinstance(one.body, BatchItem)
            self.seen[one.body.index] += 1
            failed = one.body.index in self.failing
            outcomes.append(ConnectionError("Redis refused (simulated)") if failed else None)
        return outcomes


async def test_many_messages_come_in_one_call_and_each_is_acked_once(settings: Settings) -> None:
    batch_id = uuid4()
    items = ((f"{batch_id}:{i}", item_of(batch_id, i, ITEMS)) for i in range(ITEMS))
    spy = BatchHandlerSpy()
    bus = await _started(settings, spy)
    try:
        # Published before consuming starts: a backlog, as a batch is for the store.
        assert await bus.publish_stream(channels.BATCH, items) == ITEMS
        await bus.start()
        await wait_for(lambda: len(spy.seen) == ITEMS, 30)
        await wait_for(lambda: _lag_is(bus, 0), 10)
        await asyncio.sleep(0.5)  # a redelivery of anything not acked would come now
    finally:
        await bus.stop()
    assert sum(spy.calls) == ITEMS
    assert set(spy.seen.values()) == {1}, "each item handled once, acked once"
    assert max(spy.calls) > 1, f"items that arrived together came together: {spy.calls[:20]}"


async def test_a_failed_item_is_redelivered_then_dead_lettered_an_invalid_one_at_once(
    settings: Settings,
) -> None:
    batch_id = uuid4()
    spy = BatchHandlerSpy(failing={3})
    bus = await _started(settings, spy)
    try:
        for i in range(6):
            item = item_of(batch_id, i, 6)
            await bus.publish(channels.BATCH, item, message_id=f"{batch_id}:{i}")
        await bus.publish_raw(channels.BATCH, b'{"not": "an item"}', message_id="poison")
        await bus.start()
        await wait_for(lambda: spy.seen[3] >= settings.delivery_limit, 30)
        await wait_for(lambda: _dead_count_is(bus, 2), 30)
        dead = await bus.dead_letters(channels.BATCH)
        await asyncio.sleep(0.5)
    finally:
        await bus.stop()
    assert {i: spy.seen[i] for i in range(6)} == {0: 1, 1: 1, 2: 1, 3: 3, 4: 1, 5: 1}
    reasons = {letter.message_id: letter.reason for letter in dead}
    assert set(reasons) == {"poison", f"{batch_id}:3"}
    assert reasons["poison"].startswith("invalid message:")
    assert reasons[f"{batch_id}:3"].startswith("handler failed 3 times, last error: Redis")


async def _lag_is(bus: Bus[Any], lag: int) -> bool:
    return await bus.consumer_lag(channels.BATCH) == lag


async def _dead_count_is(bus: Bus[Any], count: int) -> bool:
    return await bus.dead_letter_count(channels.BATCH) == count


async def test_rabbit_streams_a_batch_on_a_connection_apart_from_its_consumers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RabbitMQ's flow control holds back a connection that publishes fast, and with it every
    channel on it: the stream has a connection of its own (one, however many streams start
    at once), closed with the bus."""
    settings = isolated_settings("rabbit", delivery_limit=3)
    batch_id = uuid4()
    items = [(f"{batch_id}:{i}", item_of(batch_id, i, ITEMS)) for i in range(ITEMS)]
    opened: list[object] = []

    async def counted(*args: Any, **kwargs: Any) -> Any:  # the real connect, counted
        opened.append(await connect_robust(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(rabbit, "connect_robust", counted)
    spy = BatchHandlerSpy()
    bus = await _started(settings, spy)
    assert isinstance(bus, RabbitBus)
    try:
        await bus.start()
        consumers = await bus.broker.connect()
        # Two batches at once, the first streams of the bus: one connection between them.
        halves = (items[0::2], items[1::2])
        sent = await asyncio.gather(*(bus.publish_stream(channels.BATCH, h) for h in halves))
        assert sum(sent) == ITEMS
        stream = bus._stream_connection
        assert opened == [stream], "one connection for every stream"
        assert stream is not None
        assert stream is not consumers, "the stream publishes on a connection of its own"
        assert not stream.is_closed
        assert not consumers.is_closed
        await wait_for(lambda: len(spy.seen) == ITEMS, 30)
    finally:
        await bus.stop()
        await delete_namespace(settings.namespace)
    assert stream.is_closed, "the stream's connection closes with the bus"
    assert set(spy.seen.values()) == {1}


async def test_rabbit_acks_each_run_of_done_items_with_one_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store's batch items are acked with multiple=True, a run of them a frame, on a
    channel that carries no other consumer's deliveries; a failed item among them is still
    redelivered and dead-lettered on its own, nothing acked twice or left unacked."""
    settings = isolated_settings("rabbit", delivery_limit=3)
    batch_id = uuid4()
    items = ((f"{batch_id}:{i}", item_of(batch_id, i, ITEMS)) for i in range(ITEMS))
    frames: list[tuple[object, int, bool]] = []
    basic_ack = aiormq.Channel.basic_ack

    async def recorded(
        channel: aiormq.Channel, delivery_tag: int, multiple: bool = False, wait: bool = True
    ) -> None:
        frames.append((channel, delivery_tag, multiple))
        await basic_ack(channel, delivery_tag, multiple, wait)

    monkeypatch.setattr(aiormq.Channel, "basic_ack", recorded)
    spy = BatchHandlerSpy(failing={7}, write_s=0.02)
    bus = await _started(settings, spy)
    event_handled: list[object] = []

    @bus.subscriber(channels.EVENT)
    async def on_event(body: dict[str, Any]) -> None:
        event_handled.append(body)

    try:
        assert await bus.publish_stream(channels.BATCH, items) == ITEMS
        await bus.publish_raw(channels.EVENT, b"{}", message_id="an event")
        await bus.start()
        await wait_for(lambda: len(spy.seen) == ITEMS and spy.seen[7] == 3, 30)
        await wait_for(lambda: _dead_count_is(bus, 1), 30)
        await wait_for(lambda: _lag_is(bus, 0), 10)
        await asyncio.sleep(0.5)  # a redelivery of anything not acked would come now
    finally:
        await bus.stop()
        await delete_namespace(settings.namespace)
    assert event_handled == [{}]
    assert {i: n for i, n in spy.seen.items() if n != 1} == {7: 3}, "each other item once"
    grouped = {id(channel) for channel, _, multiple in frames if multiple}
    assert len(grouped) == 1, "runs of items acked together, on the batch consumer's channel"
    assert len(frames) < ITEMS / 4, f"{len(frames)} ack frames for {ITEMS} items"
    assert any(id(channel) not in grouped for channel, _, _ in frames), "the event's elsewhere"
