"""Counting the events a run appended to the namespace's event log (a Redis Stream)."""

import asyncio
import time

from msarch.storage import Store


async def events_length(store: Store) -> int:
    return await store.events.length()


async def wait_for_events(store: Store, target: int, timeout_s: float) -> float:
    """Wait until the log holds `target` events; the time it was reached (perf_counter)."""
    deadline = time.perf_counter() + timeout_s
    while (length := await events_length(store)) < target:
        if time.perf_counter() > deadline:
            raise TimeoutError(
                f"the event log reached {length} of {target} events within {timeout_s:g} s"
            )
        await asyncio.sleep(0.02)
    return time.perf_counter()
