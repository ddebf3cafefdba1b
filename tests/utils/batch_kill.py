"""The store killed at half a batch, then restarted: shared by the fault and container suites.

How the store dies and comes back is the caller's (kill -9 of a process, `docker kill` of a
container); what must hold is the same: Done with exactly every item, nothing partial ever seen.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast
from uuid import UUID

import httpx

from msarch.storage import Store
from msarch.testing.stack import wait_for
from tests.utils.figures import Figures


async def kill_store_at_half_a_batch(
    gateway_url: str,
    store: Store,
    size: int,
    *,
    kill: Callable[[], Awaitable[object]],
    restart: Callable[[], Awaitable[object]],
    figures: Figures,
) -> None:
    """POST a batch of `size`, kill the store when half of it is staged, restart it: the batch
    is Done with exactly every item, and a reader polling every 10 ms sees 0 or all of it."""
    seen: set[int] = set()
    polls = 0
    batch_id: UUID | None = None
    finished = asyncio.Event()

    async def watch() -> None:
        """Every 10 ms: the final hash of the batch has 0 or all of its fields."""
        nonlocal polls, batch_id
        while not finished.is_set():
            if batch_id is None:
                ids = cast(list[str], await store.redis.zrange(store.keys.assembling, 0, 0))
                batch_id = UUID(ids[0]) if ids else None
            if batch_id is not None:
                seen.add(await store.redis.hlen(store.keys.batch(str(batch_id))))
                polls += 1
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            request = asyncio.create_task(
                client.post(f"{gateway_url}/api/batch", json={"size": size})
            )

            async def half_staged() -> bool:
                return batch_id is not None and await _staged(store, batch_id) >= size // 2

            await wait_for(half_staged, 60, 0.02)
            await kill()
            assert batch_id is not None
            killed_at = await _staged(store, batch_id)
            await restart()
            response = await request
        finished.set()
        await watcher
        fields = await store.redis.hlen(store.keys.batch(str(batch_id)))
        staging = await store.redis.exists(store.keys.batch_staging(str(batch_id)))
    finally:
        finished.set()
        watcher.cancel()
    figures(
        size=size,
        killed_at_items=killed_at,
        http_status=response.status_code,
        elapsed_ms=response.json().get("elapsed_ms"),
        final_fields=fields,
        reader_polls=polls,
        reader_saw=sorted(seen),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {**response.json(), "batch_id": str(batch_id), "status": "Done"}
    assert 0 < killed_at < size
    assert fields == size
    assert not staging
    assert seen <= {0, size}, f"a reader saw part of the batch: {sorted(seen)}"


async def _staged(store: Store, batch_id: UUID) -> int:
    state = await store.batch_state(batch_id)
    return state.stored if state else 0
