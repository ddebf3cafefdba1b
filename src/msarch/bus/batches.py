"""Consuming in batches: many messages of a work channel handed to one handler call.

A batch handler takes the messages that arrived together (`Received`, already validated) and
returns one outcome each, None for done or the exception that failed it; the bus then acks
each done message and nacks or dead-letters each failed one, as it would a message of its own.

How the messages come together is the backend's: NATS hands over what a pull consumer fetched
(FastStream's batch pull subscriber), so the per-message consume path is paid once a fetch;
elsewhere a `Coalescer` gathers the messages being handled concurrently (up to the prefetch),
and can settle the done ones of a call together (RabbitMQ: one multiple ack) before each
message's handler returns.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

MAX_BATCH = 2000
"""The most messages one handler call gets from a Coalescer."""


@dataclass(frozen=True, slots=True)
class Received:
    """One message of a batch: its validated body and what it came with."""

    body: BaseModel
    message_id: str | None
    correlation_id: str | None
    traceparent: str | None


Outcome = BaseException | None
BatchHandler = Callable[[list[Received]], Awaitable[Sequence[Outcome]]]
"""A handler of many messages at once: an outcome for each, in order."""
Settle = Callable[[list[Any]], Awaitable[None]]
"""What settles the deliveries of a call's done messages together; it never raises."""


class Coalescer:
    """Hands the messages being handled concurrently to a batch handler together.

    Each message's own handler `add`s it with its delivery and waits; one flusher calls the
    batch handler with whatever has accumulated (at most MAX_BATCH at a time), hands the
    deliveries of the done messages to `settle`, and releases each waiting handler with its
    outcome: it returns, or raises the exception that failed its message.
    """

    def __init__(self, handle: BatchHandler, settle: Settle) -> None:
        self._handle = handle
        self._settle = settle
        self._pending: list[tuple[Received, Any, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    async def add(self, received: Received, delivery: Any = None) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((received, delivery, done))
        self._wakeup.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever(), name="bus:coalescer")
        await done

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                chunk, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._flush(chunk)

    async def _flush(self, chunk: list[tuple[Received, Any, "asyncio.Future[None]"]]) -> None:
        try:
            outcomes = await outcomes_of(self._handle, [received for received, _, _ in chunk])
            await self._settle(
                [d for (_, d, _), outcome in zip(chunk, outcomes, strict=True) if outcome is None]
            )
        except BaseException as exc:  # cancelled: the waiting handlers end too, then we do
            for _, _, done in chunk:
                if not done.done():
                    done.set_exception(exc)
            raise
        for (_, _, done), outcome in zip(chunk, outcomes, strict=True):
            if done.done():  # its handler was cancelled meanwhile
                continue
            if outcome is None:
                done.set_result(None)
            else:
                done.set_exception(outcome)


async def outcomes_of(handle: BatchHandler, received: list[Received]) -> list[Outcome]:
    """The batch handler's outcomes; an exception of the call itself is each message's."""
    try:
        return list(await handle(received))
    except Exception as exc:
        return [exc] * len(received)


async def undecoded(*_: Any) -> list[Any]:
    """A FastStream decoder of fetched batches that decodes nothing (an empty list, for a
    handler documented as taking a list of the payload): the bus validates each body itself."""
    return []
