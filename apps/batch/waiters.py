"""Requests waiting for their batch reply, resolved by the `batch_reply` subscriber.

Every batch instance receives every reply (broadcast); only the instance that
has a waiter for the batch id does anything with it.
"""

import asyncio
from uuid import UUID

from msarch.messages import BatchReply


class Waiters:
    def __init__(self) -> None:
        self._waiting: dict[UUID, asyncio.Future[BatchReply]] = {}

    def expect(self, batch_id: UUID) -> "asyncio.Future[BatchReply]":
        future: asyncio.Future[BatchReply] = asyncio.get_running_loop().create_future()
        self._waiting[batch_id] = future
        return future

    def forget(self, batch_id: UUID) -> None:
        self._waiting.pop(batch_id, None)

    def resolve(self, reply: BatchReply) -> bool:
        future = self._waiting.get(reply.batch_id)
        if future is None or future.done() or not reply.status.is_final:
            return False
        future.set_result(reply)
        return True
