"""Creating one batch: record it, publish its items, wait for the store's reply.

The store decides a batch's outcome and replies on `batch_reply`; this side
only records the request, streams the items and waits. When no reply comes in
time the durable status in Redis is the answer (a reply can be lost, the
outcome cannot). The HTTP answers are the route's: this module raises or
returns plain results.
"""

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from prometheus_client import Histogram
from redis.exceptions import RedisError

from apps.batch.waiters import Waiters
from msarch import channels
from msarch.bus import PublishError
from msarch.messages import BatchItem, BatchReply, BatchStatus, item_of
from msarch.observability import request_id
from msarch.service import Runtime

KEEP_ALIVE_S = 1.0
ANSWER_MARGIN_S = 2.0
"""Kept back from the caller's wait for recording a timeout and answering it."""

BATCH_SIZE = Histogram(
    "msarch_batch_size_items",
    "Items of each batch created, by its outcome (a BatchStatus)",
    ["service", "outcome"],
    buckets=(1, 10, 20, 50, 100, 1_000, 10_000, 100_000, 1_000_000),
)
BATCH_DURATION = Histogram(
    "msarch_batch_duration_seconds",
    "From a batch's request to its outcome (a BatchStatus)",
    ["service", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0, 300.0),
)


class BatchNotPublished(Exception):
    """The broker did not take every item; the batch is recorded as failed in Redis."""

    def __init__(self, batch_id: UUID, error: PublishError) -> None:
        super().__init__(f"the broker did not take the batch: {error}")
        self.batch_id = batch_id


class StoppedWaiting(Exception):
    """The service is stopping before the reply came; the batch goes on without us."""

    def __init__(self, batch_id: UUID) -> None:
        super().__init__(
            f"the batch service is stopping; batch {batch_id} goes on: "
            f"GET /api/batch/{batch_id} gives its outcome"
        )
        self.batch_id = batch_id


@dataclass(frozen=True)
class BatchOutcome:
    batch_id: UUID
    size: int
    status: BatchStatus
    detail: str | None
    elapsed_ms: float


@dataclass
class BatchCoordinator:
    """One batch from request to outcome, for the service's runtime and its waiters."""

    runtime: Runtime
    waiters: Waiters

    async def create(self, size: int, caller_waits_s: float | None = None) -> BatchOutcome:
        """The outcome of a new batch of `size` items; BatchNotPublished or StoppedWaiting.

        A caller that waits `caller_waits_s` at most (the gateway's route timeout) gets
        TimeoutExceeded in that time, publishing included, rather than no answer at all.
        Every outcome is in /metrics, with its size and how long it took; a wait given up
        (StoppedWaiting) has none yet."""
        started = time.perf_counter()
        try:
            outcome = await self._create(size, caller_waits_s)
        except BatchNotPublished:
            self._record(size, BatchStatus.DatabaseOperationFailed, time.perf_counter() - started)
            raise
        self._record(size, outcome.status, outcome.elapsed_ms / 1000)
        return outcome

    def _record(self, size: int, status: BatchStatus, seconds: float) -> None:
        service = self.runtime.name
        BATCH_SIZE.labels(service, status.value).observe(size)
        BATCH_DURATION.labels(service, status.value).observe(seconds)

    async def _create(self, size: int, caller_waits_s: float | None) -> BatchOutcome:
        batch_id = uuid4()
        started = time.perf_counter()
        deadline = _deadline(caller_waits_s)
        reply = self.waiters.expect(batch_id)  # before publishing: a fast reply is not missed
        keep_alive = asyncio.create_task(self._keep_assembling(batch_id))
        try:
            if await self._published_in_time(batch_id, size, deadline):
                status, detail = await self._outcome(batch_id, reply, deadline)
            else:
                late = f"its {size} items were not all published in the {caller_waits_s:g} s"
                status, detail = await self._timed_out(batch_id, f"{late} the caller waits")
        finally:
            keep_alive.cancel()
            self.waiters.forget(batch_id)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        return BatchOutcome(batch_id, size, status, detail, elapsed_ms)

    async def _published_in_time(self, batch_id: UUID, size: int, deadline: float | None) -> bool:
        """Every item published, unless `deadline` came first; BatchNotPublished if the broker
        would not take them."""
        in_time = asyncio.timeout_at(deadline)
        try:
            async with in_time:
                await self._publish(batch_id, size, deadline)
        except TimeoutError:
            if not in_time.expired():
                raise
            return False
        return True

    async def _publish(self, batch_id: UUID, size: int, deadline: float | None) -> None:
        """Every item, each sent again while the broker does not confirm it: for as long as
        the caller waits (a quorum queue's new leader, a connection moving to another node
        and restoring its channels can take longer than MSARCH_PUBLISH_RETRY_S), else for
        MSARCH_PUBLISH_RETRY_S."""
        store, correlation_id = self.runtime.store, request_id.get()
        await store.request_batch(batch_id, size, correlation_id)
        retry_for_s = None
        if deadline is not None:
            retry_for_s = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            await self.runtime.bus.publish_stream(
                channels.BATCH,
                _items(batch_id, size),
                correlation_id=correlation_id,
                retry_for_s=retry_for_s,
            )
        except PublishError as exc:
            await store.fail_batch(
                batch_id, BatchStatus.DatabaseOperationFailed, f"publishing failed: {exc}"
            )
            raise BatchNotPublished(batch_id, exc) from exc

    async def _outcome(
        self, batch_id: UUID, reply: "asyncio.Future[BatchReply]", deadline: float | None
    ) -> tuple[BatchStatus, str | None]:
        timeout_s = self.runtime.settings.batch_timeout_s
        own = asyncio.get_running_loop().time() + timeout_s
        try:
            async with asyncio.timeout_at(own if deadline is None else min(own, deadline)):
                answer = await _reply_unless_stopping(reply, self.runtime.stopping)
        except TimeoutError:
            if deadline is not None and deadline < own:
                return await self._timed_out(batch_id, "no reply in the time the caller waits")
            return await self._timed_out(batch_id, f"no reply within {timeout_s:g} s")
        if answer is None:
            raise StoppedWaiting(batch_id)
        return answer.status, answer.detail

    async def _timed_out(self, batch_id: UUID, detail: str) -> tuple[BatchStatus, str | None]:
        """TimeoutExceeded, unless the batch reached another final status meanwhile."""
        store = self.runtime.store
        status = await store.fail_batch(batch_id, BatchStatus.TimeoutExceeded, detail)
        state = await store.batch_state(batch_id)
        return status, state.detail if state else None

    async def _keep_assembling(self, batch_id: UUID) -> None:
        """While this request publishes and waits, its batch is not stalled, however long its
        items queue behind others; the store times out only a batch whose publisher is gone."""
        while True:
            with contextlib.suppress(RedisError):  # a missed beat is made up by the next one
                await self.runtime.store.keep_assembling(batch_id)
            await asyncio.sleep(KEEP_ALIVE_S)


def _deadline(caller_waits_s: float | None) -> float | None:
    """When to stop trying, on the loop's clock, so that the answer reaches the caller in time."""
    if caller_waits_s is None:
        return None
    margin = min(ANSWER_MARGIN_S, caller_waits_s / 2)
    return asyncio.get_running_loop().time() + caller_waits_s - margin


def _items(batch_id: UUID, size: int) -> Iterator[tuple[str, BatchItem]]:
    for index in range(size):
        yield f"{batch_id}:{index}", item_of(batch_id, index, size)


async def _reply_unless_stopping(
    reply: "asyncio.Future[BatchReply]", stopping: asyncio.Event
) -> BatchReply | None:
    """The batch's reply, or None if the service is told to stop first."""
    stop: asyncio.Future[Any] = asyncio.create_task(stopping.wait())
    either: set[asyncio.Future[Any]] = {reply, stop}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    return reply.result() if reply.done() else None
