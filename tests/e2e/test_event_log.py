"""The event log: exactly-once effects, paging, websocket catch-up, and replay."""

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from msarch.events import EventType, event_position
from msarch.replay import drop, replay_and_compare
from msarch.snapshots import latest, restore_into, take
from msarch.storage import Store
from msarch.testing.stack import Stack, StackFactory, wait_for, ws_frames

pytestmark = pytest.mark.e2e


async def _roundtrips(stack: Stack, keys: list[str], concurrency: int = 16) -> list[str]:
    """POST each key through the gateway; returns the accepted ids."""
    window = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(key: str) -> str:
            async with window:
                response = await client.post(
                    f"{stack.gateway_url}/api/roundtrip", json={"key": key, "value": f"v-{key}"}
                )
                assert response.status_code == 202, response.text
                return str(response.json()["id"])

        return list(await asyncio.gather(*(one(k) for k in keys)))


async def _kv_events_after(store: Store, after: str | None) -> list[str]:
    ids: list[str] = []
    while page := await store.read_events(after, 1000):
        ids += [e.id for e in page if e.type is EventType.KeyValueStored]
        after = page[-1].id
    return ids


async def test_event_pages_cover_the_log_exactly_once(stack: Stack) -> None:
    await _roundtrips(stack, [f"page-{i}" for i in range(40)])
    store = stack.store()
    try:
        total = await store.events.length()
    finally:
        await store.close()
    seen: list[str] = []
    after: str | None = None
    async with httpx.AsyncClient() as client:
        while True:
            params: dict[str, Any] = {"limit": 7}
            if after:
                params["after"] = after
            page = (await client.get(f"{stack.gateway_url}/api/events", params=params)).json()
            seen += [e["id"] for e in page["events"]]
            after = page["next_after"]
            if after is None:
                break
        bad = await client.get(f"{stack.gateway_url}/api/events", params={"after": "nope"})
    assert len(seen) >= total  # the log may have grown meanwhile, never shrunk
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen, key=lambda i: tuple(map(int, i.split("-"))))
    assert bad.status_code == 422


async def test_catch_up_while_roundtrips_stream_has_no_gap_and_no_duplicate(stack: Stack) -> None:
    store = stack.store()
    start = await store.last_event_id() or "0-0"
    keys = [f"catchup-{i}" for i in range(1000)]
    sender = asyncio.create_task(_roundtrips(stack, keys))
    try:
        await wait_for(lambda: _count_after(store, start, 200), 60, 0.02)
        # First client: joins mid-stream from `start`; second: drops and resumes.
        first: list[dict[str, Any]] = []
        ready = asyncio.Event()
        reader = asyncio.create_task(ws_frames(f"{stack.ws_url}?after={start}", first, ready))
        second = await _drop_and_resume(stack, start, sender)
        await sender
        expected = await _kv_events_after(store, start)
        await wait_for(lambda: len(first) >= len(expected), 30)
        reader.cancel()
    finally:
        await store.close()
    # Live frames come in the order the store forwarded them, not always log order.
    mine = [f["event_id"] for f in first]
    assert len(mine) == len(set(mine)), "no duplicate"
    assert sorted(mine, key=event_position) == expected, "no gap"
    assert sorted(second, key=event_position) == expected, "no gap across the reconnect"


async def _count_after(store: Store, start: str, n: int) -> bool:
    return len(await store.read_events(start, n)) >= n


async def _drop_and_resume(stack: Stack, start: str, sender: "asyncio.Task[Any]") -> list[str]:
    """A client as the web client is: read, drop, resume, keep each event once.

    Live frames may arrive a little out of log order, so the last id received is
    not a safe resume point (an earlier one may still be on its way): the client
    resumes after the oldest of its last 64 ids and drops what it has already.
    Each connection on its own must never repeat a frame.
    """
    seen: dict[str, None] = {}
    async with websockets.connect(f"{stack.ws_url}?after={start}") as socket:
        first = [json.loads(await socket.recv())["event_id"] for _ in range(300)]
    assert len(first) == len(set(first)), "no duplicate within a connection"
    seen.update(dict.fromkeys(first))
    await asyncio.sleep(0.3)  # roundtrips keep flowing while this client is away
    resume = min(first[-64:], key=event_position)
    again: list[str] = []
    async with websockets.connect(f"{stack.ws_url}?after={resume}") as socket:
        while True:
            try:
                frame = await asyncio.wait_for(socket.recv(), 3 if sender.done() else 30)
            except TimeoutError:
                break
            again.append(json.loads(frame)["event_id"])
    assert len(again) == len(set(again)), "no duplicate within a connection"
    seen.update(dict.fromkeys(again))
    return list(seen)


async def test_a_reader_resuming_after_trimmed_events_is_told_instead_of_missing_them(
    private_stack: Stack,
) -> None:
    """An operator trimmed the log: /api/events after an id
    whose successors are gone is 410 Gone, and the websocket catch-up sends a gap frame
    before the kept events; a reader after the trimmed part is served as before."""
    stack = private_stack
    await _roundtrips(stack, [f"trim-{i}" for i in range(6)])
    store = stack.store()
    try:
        await wait_for(lambda: _count_after(store, "0-0", 6), 30)
        ids = [e.id for e in await store.read_events(None, 100)]
        assert (await take(store)).event_id == ids[-1]
        assert await store.trim_events_before(ids[4]) == (4, ids[3])
        assert await store.trim_events_before(ids[2]) == (0, None), "nothing left before it"
        kept = ids[4:]
    finally:
        await store.close()
    async with httpx.AsyncClient() as client:
        gone = await client.get(f"{stack.gateway_url}/api/events", params={"after": ids[0]})
        after_the_cut = await client.get(
            f"{stack.gateway_url}/api/events", params={"after": ids[3]}
        )
    assert gone.status_code == 410, gone.text
    assert gone.headers["content-type"] == "application/problem+json"
    assert (gone.json()["oldest_event_id"], gone.json()["removed_up_to"]) == (ids[4], ids[3])
    assert gone.json()["snapshot_event_id"] == ids[-1]
    assert f"the latest snapshot holds the state as of {ids[-1]}" in gone.json()["detail"]
    assert after_the_cut.status_code == 200
    assert [e["id"] for e in after_the_cut.json()["events"]] == kept

    async with websockets.connect(f"{stack.ws_url}?after={ids[0]}") as socket:
        frames = [json.loads(await asyncio.wait_for(socket.recv(), 10)) for _ in range(3)]
    assert frames[0]["type"] == "gap"
    assert (frames[0]["after"], frames[0]["oldest_event_id"]) == (ids[0], ids[4])
    assert frames[0]["snapshot_event_id"] == ids[-1]
    assert [f["event_id"] for f in frames[1:]] == kept


@pytest.mark.slow
async def test_replay_equals_live_state(stack: Stack) -> None:
    keys = [f"replay-{i % 1500}" for i in range(2000)]  # overwrites too
    async with httpx.AsyncClient(timeout=120) as client:
        batches = asyncio.gather(
            *(
                client.post(f"{stack.gateway_url}/api/batch", json={"size": n})
                for n in (1500, 1000, 500, 250)
            )
        )
        await _roundtrips(stack, keys)
        for response in await batches:
            assert response.status_code == 200, response.text
    live = stack.store()
    scratch = Store.from_settings(stack.settings, namespace=stack.settings.namespace + "replay-")
    try:
        await wait_for(lambda: live.get_value("replay-499"), 30)
        report = await replay_and_compare(live, scratch)
    finally:
        await drop(scratch)
        await live.close()
        await scratch.close()
    assert report.differences == []
    assert report.events["KeyValueStored"] >= 2000
    assert report.events["BatchItemStaged"] >= 3250
    assert report.kv_keys >= 1500
    print(
        f"replayed {sum(report.events.values())} events in {report.rebuild_s:.2f} s, "
        f"compared in {report.compare_s:.2f} s"
    )


async def test_the_store_snapshots_and_trims_on_its_schedule_and_replay_still_agrees(
    stack_with: StackFactory,
) -> None:
    """MSARCH_SNAPSHOT_EVERY_S=0.5 and MSARCH_LOG_KEEP_S=0 with two store instances: the log
    shrinks to what came after the latest snapshot, and replay from it equals the live state."""
    async with stack_with(snapshot_every_s=0.5, log_keep_s=0) as stack:
        await stack.add_instance("store")
        await _roundtrips(stack, [f"upkeep-{i % 50}" for i in range(300)])
        live = stack.store()
        scratch = live.in_namespace(stack.settings.namespace + "replay-")
        try:
            await wait_for(lambda: live.get_value("upkeep-49"), 30)
            last = await live.last_event_id()  # the store may still be writing the others
            assert last is not None

            async def snapshotted() -> bool:
                snapshot = await latest(live)
                return snapshot is not None and (
                    event_position(snapshot.event_id) >= event_position(last)
                )

            await wait_for(snapshotted, 30, 0.1)
            await wait_for(lambda: _log_is_empty(live), 10, 0.1)
            report = await replay_and_compare(live, scratch, await restore_into(live, scratch))
        finally:
            await drop(scratch)
            await live.close()
    assert report.passed, report.differences
    assert report.kv_keys == 50


async def _log_is_empty(store: Store) -> bool:
    return not await store.read_events(None, 1)
