"""The batch baselines' messages and how they are published.

Each message is the JSON of a BatchItem as msarch sends it (batch id, index, size, key,
value: ~190 bytes), encoded with the standard library; the consumer decodes it. Publishing
is pipelined the way msarch's batch publisher is (bus.publish_stream): each message's
confirm awaited in a task of its own, at most `window` outstanding.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from uuid import UUID


def item_body(batch_id: UUID, index: int, size: int) -> bytes:
    return json.dumps(
        {
            "batch_id": str(batch_id),
            "index": index,
            "size": size,
            "key": f"{batch_id}_key_{index}",
            "value": f"{batch_id}_value_{index}",
        },
        separators=(",", ":"),
    ).encode()


async def publish_pipelined(
    send: Callable[[int], Awaitable[object]], count: int, window: int
) -> None:
    """`send(index)` for every index below `count`, at most `window` of them unconfirmed;
    the first failure (a nack, a returned message, a timeout) is raised."""
    pending: set[asyncio.Future[object]] = set()
    try:
        for index in range(count):
            if len(pending) >= window:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    future.result()
            pending.add(asyncio.ensure_future(send(index)))
        await asyncio.gather(*pending)
    finally:
        for future in pending:
            future.cancel()
