"""The batch service's `batch_reply` subscriber and its waiters, on TestRabbitBroker and
TestNatsBroker (each subscriber test runs once per backend)."""

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from uuid import uuid4

import pytest

from apps.batch.handlers import subscribe
from apps.batch.waiters import Waiters
from msarch import channels
from msarch.messages import BatchReply, BatchStatus
from tests.utils.broker import InMemoryBroker, in_memory
from tests.utils.fixture_api import RuntimeFactory


@dataclass
class BatchReplies:
    """The batch service's subscriber on FastStream's test broker, and its Waiters."""

    wire: InMemoryBroker
    waiters: Waiters


@pytest.fixture
async def replies(make_runtime: RuntimeFactory, backend: str) -> AsyncIterator[BatchReplies]:
    runtime = make_runtime("batch", [Waiters], backend=backend)
    subscribe(runtime)
    async with in_memory(runtime.bus) as wire:
        yield BatchReplies(wire, runtime.dependency(Waiters))


async def _reply(replies: BatchReplies, reply: BatchReply | Mapping[str, object]) -> None:
    await replies.wire.send(channels.BATCH_REPLY, reply)


async def test_a_final_reply_wakes_the_request_waiting_for_it(replies: BatchReplies) -> None:
    batch_id, other = uuid4(), uuid4()
    waiting, bystander = replies.waiters.expect(batch_id), replies.waiters.expect(other)
    await _reply(replies, BatchReply(batch_id=batch_id, status=BatchStatus.Done))
    reply = await asyncio.wait_for(waiting, 1)
    assert (reply.batch_id, reply.status) == (batch_id, BatchStatus.Done)
    assert not bystander.done()


async def test_a_reply_as_it_travels_on_the_wire_is_understood(replies: BatchReplies) -> None:
    batch_id = uuid4()
    waiting = replies.waiters.expect(batch_id)
    wire = {"batch_id": str(batch_id), "status": "Invalid", "detail": "index 9 is outside 0..1"}
    await _reply(replies, wire)
    reply = await asyncio.wait_for(waiting, 1)
    assert (reply.status, reply.detail) == (BatchStatus.Invalid, "index 9 is outside 0..1")


async def test_a_reply_nobody_waits_for_is_acked_and_ignored(
    replies: BatchReplies, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved: list[bool] = []
    resolve = replies.waiters.resolve

    def spy(reply: BatchReply) -> bool:
        resolved.append(resolve(reply))
        return resolved[-1]

    monkeypatch.setattr(replies.waiters, "resolve", spy)
    # Another instance's batch: every instance gets every reply. No error, nothing kept.
    await _reply(replies, BatchReply(batch_id=uuid4(), status=BatchStatus.Done))
    assert resolved == [False]


@pytest.mark.parametrize(
    "status", [BatchStatus.None_, BatchStatus.PendingConsume, BatchStatus.PendingDatabase]
)
async def test_a_non_final_reply_does_not_wake_the_request(
    replies: BatchReplies, status: BatchStatus
) -> None:
    batch_id = uuid4()
    waiting = replies.waiters.expect(batch_id)
    await _reply(replies, BatchReply(batch_id=batch_id, status=status))
    assert not waiting.done()
    await _reply(replies, BatchReply(batch_id=batch_id, status=BatchStatus.Done))
    assert (await asyncio.wait_for(waiting, 1)).status is BatchStatus.Done


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
