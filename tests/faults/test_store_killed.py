"""Faults 1 and 2 of issue 7: the store killed with kill -9 in the middle of the work.

Nothing confirmed may be lost, nothing may be applied twice, and a reader never
sees part of a batch.
"""

import asyncio
import os
import time
from typing import Any

import pytest

from msarch.settings import Settings
from msarch.storage import MessageState, Store
from msarch.testing.load import RoundtripLoad, kv_event_ids, metric, missing_keys
from msarch.testing.stack import Stack, StackFactory, wait_for, ws_frames
from tests.utils.batch_kill import kill_store_at_half_a_batch
from tests.utils.figures import Figures

pytestmark = [pytest.mark.faults, pytest.mark.slow]

ROUNDTRIPS = int(os.environ.get("MSARCH_FAULTS_ROUNDTRIPS", "10000"))
"""As issue 7 asks (MSARCH_FAULTS_ROUNDTRIPS makes it smaller for a quick look).
The kill comes at a third of them."""
BATCH = 10_000


@pytest.mark.timeout(300)
async def test_store_killed_mid_stream_loses_no_roundtrip(
    private_stack: Stack, figures: Figures
) -> None:
    stack, store_process = private_stack, private_stack.processes["store"]
    channel = stack.settings.namespace + "event"
    frames: list[dict[str, Any]] = []
    ready = asyncio.Event()
    reader = asyncio.create_task(ws_frames(stack.ws_url, frames, ready))
    await asyncio.wait_for(ready.wait(), 10)
    load = RoundtripLoad(stack.gateway_url, "kill", concurrency=32)
    store = stack.store()
    at_kill: dict[str, int] = {}

    async def kill_and_restart() -> None:
        await wait_for(lambda: len(load.confirmed) >= ROUNDTRIPS // 3, 120)
        # Kill while the store holds messages it wrote but has not acked yet.
        await wait_for(lambda: _written_not_forwarded(store, list(load.confirmed)[-64:]), 30, 0.002)
        await store_process.kill()
        # Only the store appends to the log: this is exactly what it wrote before dying.
        at_kill["events"] = await store.events.length()
        # Written, not forwarded, so not acked: each one must come back to the restarted store.
        at_kill["unacked_written"] = await _written_not_forwarded(store)
        at_kill["confirmed"] = len(load.confirmed)
        await asyncio.sleep(1.0)
        await stack.restart("store")

    started = time.monotonic()
    try:
        await asyncio.gather(load.run(ROUNDTRIPS), kill_and_restart())
        sent_s = time.monotonic() - started
        assert load.statuses == {202: ROUNDTRIPS}, "the roundtrip service does not need the store"

        async def all_stored() -> bool:
            return not await missing_keys(store, load.confirmed)

        await wait_for(all_stored, 120, 0.5)
        drained_s = time.monotonic() - started
        await wait_for(lambda: set(load.confirmed) <= {f["id"] for f in frames}, 60, 0.2)
        events = await kv_event_ids(store)
        consumed_by_restarted = await metric(
            store_process.url, "msarch_messages_consumed_total", channel=channel, outcome="ok"
        )
    finally:
        reader.cancel()
        await store.close()

    pushed = [f["id"] for f in frames]
    duplicates = len(pushed) - len(set(pushed))
    # The restarted store handled what the dead one had not written, plus the redeliveries
    # of what it had written but not acked: those it recognised and did not append again.
    redeliveries = int(consumed_by_restarted) - (ROUNDTRIPS - at_kill["events"])
    figures(
        roundtrips=ROUNDTRIPS,
        confirmed=len(load.confirmed),
        killed_after_confirmed=at_kill["confirmed"],
        stored_before_kill=at_kill["events"],
        missing=len(load.confirmed) - len(set(events) & set(load.confirmed)),
        events=sum(events.values()),
        events_twice=sum(1 for n in events.values() if n > 1),
        redeliveries=redeliveries,
        unacked_written_at_kill=at_kill["unacked_written"],
        ws_frames=len(pushed),
        ws_duplicates=duplicates,
        send_s=round(sent_s, 1),
        all_stored_s=round(drained_s, 1),
    )
    assert set(events) == set(load.confirmed)
    assert set(events.values()) == {1}, "each roundtrip is in the event log exactly once"
    assert all(f["event_id"] for f in frames)
    assert duplicates == 0
    # Every message the dead store had written but not acked came back, and nothing beyond
    # what the broker let it hold unacked (prefetch; max_ack_pending on NATS). The kill races
    # the store's last writes: on a fast run none may be left in between (seen on NATS).
    assert at_kill["unacked_written"] <= redeliveries <= _max_unacked(stack.settings)


async def _written_not_forwarded(store: Store, ids: list[str] | None = None) -> int:
    """How many roundtrip messages (these, or all) the store logged but did not forward yet."""
    if ids is None:
        pattern = store.keys.message("*")
        ids = [key[len(pattern) - 1 :] async for key in store.redis.scan_iter(pattern, 1000)]
    pipe = store.redis.pipeline(transaction=False)
    for message_id in ids:
        pipe.hget(store.keys.message(message_id), "state")
    return sum(1 for state in await pipe.execute() if state == MessageState.STORED)


def _max_unacked(settings: Settings) -> int:
    """How many messages the broker lets one consumer hold unacked (msarch.bus)."""
    return settings.prefetch * (4 if settings.broker_url.startswith("nats") else 1)


@pytest.mark.timeout(300)
async def test_store_killed_at_half_a_batch_commits_it_whole(
    stack_with: StackFactory, figures: Figures
) -> None:
    async with stack_with() as stack:  # the default batch timeout, 20 s
        store = stack.store()
        try:
            await kill_store_at_half_a_batch(
                stack.gateway_url,
                store,
                BATCH,
                kill=stack.processes["store"].kill,
                restart=lambda: stack.restart("store"),
                figures=figures,
            )
        finally:
            await store.close()
