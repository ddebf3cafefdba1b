"""The batch service's `batch_reply` subscriber and its waiters, on TestRabbitBroker."""

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any
from uuid import uuid4

import pytest
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, TestRabbitBroker

from apps.batch.handlers import WAITERS, subscribe
from apps.batch.waiters import Waiters
from msarch import channels
from msarch.bus import Bus
from msarch.messages import BatchReply, BatchStatus
from tests.unit.conftest import RuntimeFactory


@pytest.fixture
async def batch_broker(
    make_runtime: RuntimeFactory,
) -> AsyncIterator[tuple[Bus[Any], RabbitBroker]]:
    runtime = make_runtime("batch")
    subscribe(runtime)
    async with TestRabbitBroker(runtime.bus.broker) as broker:
        yield runtime.bus, broker


async def _reply(
    bus: Bus[Any], broker: RabbitBroker, reply: BatchReply | Mapping[str, object]
) -> None:
    exchange = RabbitExchange(bus.name(channels.BATCH_REPLY), type=ExchangeType.FANOUT)
    await broker.publish(reply, exchange=exchange)


async def test_a_final_reply_wakes_the_request_waiting_for_it(
    batch_broker: tuple[Bus[Any], RabbitBroker],
) -> None:
    bus, broker = batch_broker
    batch_id, other = uuid4(), uuid4()
    waiting, bystander = WAITERS.expect(batch_id), WAITERS.expect(other)
    try:
        await _reply(bus, broker, BatchReply(batch_id=batch_id, status=BatchStatus.Done))
        reply = await asyncio.wait_for(waiting, 1)
        assert (reply.batch_id, reply.status) == (batch_id, BatchStatus.Done)
        assert not bystander.done()
    finally:
        WAITERS.forget(batch_id)
        WAITERS.forget(other)


async def test_a_reply_as_it_travels_on_the_wire_is_understood(
    batch_broker: tuple[Bus[Any], RabbitBroker],
) -> None:
    bus, broker = batch_broker
    batch_id = uuid4()
    waiting = WAITERS.expect(batch_id)
    try:
        wire = {"batch_id": str(batch_id), "status": "Invalid", "detail": "index 9 is outside 0..1"}
        await _reply(bus, broker, wire)
        reply = await asyncio.wait_for(waiting, 1)
        assert (reply.status, reply.detail) == (BatchStatus.Invalid, "index 9 is outside 0..1")
    finally:
        WAITERS.forget(batch_id)


async def test_a_reply_nobody_waits_for_is_acked_and_ignored(
    batch_broker: tuple[Bus[Any], RabbitBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    bus, broker = batch_broker
    resolved: list[bool] = []
    resolve = WAITERS.resolve

    def spy(reply: BatchReply) -> bool:
        resolved.append(resolve(reply))
        return resolved[-1]

    monkeypatch.setattr(WAITERS, "resolve", spy)
    # Another instance's batch: every instance gets every reply. No error, nothing kept.
    await _reply(bus, broker, BatchReply(batch_id=uuid4(), status=BatchStatus.Done))
    assert resolved == [False]


@pytest.mark.parametrize(
    "status", [BatchStatus.None_, BatchStatus.PendingConsume, BatchStatus.PendingDatabase]
)
async def test_a_non_final_reply_does_not_wake_the_request(
    batch_broker: tuple[Bus[Any], RabbitBroker], status: BatchStatus
) -> None:
    bus, broker = batch_broker
    batch_id = uuid4()
    waiting = WAITERS.expect(batch_id)
    try:
        await _reply(bus, broker, BatchReply(batch_id=batch_id, status=status))
        assert not waiting.done()
        await _reply(bus, broker, BatchReply(batch_id=batch_id, status=BatchStatus.Done))
        assert (await asyncio.wait_for(waiting, 1)).status is BatchStatus.Done
    finally:
        WAITERS.forget(batch_id)


# -- Waiters alone ------------------------------------------------------------------------


async def test_only_the_first_final_reply_counts() -> None:
    waiters = Waiters()
    batch_id = uuid4()
    future = waiters.expect(batch_id)
    assert waiters.resolve(BatchReply(batch_id=batch_id, status=BatchStatus.TimeoutExceeded))
    assert not waiters.resolve(BatchReply(batch_id=batch_id, status=BatchStatus.Done))
    assert future.result().status is BatchStatus.TimeoutExceeded


async def test_a_forgotten_batch_is_not_resolved() -> None:
    waiters = Waiters()
    batch_id = uuid4()
    future = waiters.expect(batch_id)
    waiters.forget(batch_id)
    waiters.forget(batch_id)  # forgetting twice is harmless
    assert not waiters.resolve(BatchReply(batch_id=batch_id, status=BatchStatus.Done))
    assert not future.done()


async def test_a_cancelled_request_does_not_break_resolve() -> None:
    waiters = Waiters()
    batch_id = uuid4()
    waiters.expect(batch_id).cancel()
    assert not waiters.resolve(BatchReply(batch_id=batch_id, status=BatchStatus.Done))
