"""Poison messages go to the dead-letter queue with the reason; the service keeps serving. A
newer version's message is not poison."""

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from msarch import channels
from msarch.bus import Bus
from msarch.messages import KeyValue
from msarch.testing.stack import Stack, wait_for, ws_frames
from tests.utils.broker import connected_bus

pytestmark = pytest.mark.e2e


async def _dead_letters(
    bus: Bus[Any], channel: channels.Channel, expected: int
) -> list[tuple[bytes, str]]:
    found: list[tuple[bytes, str]] = []

    async def drained() -> bool:
        found.extend([x async for x in bus.iter_dead_letters(channel)])
        return len(found) >= expected

    await wait_for(drained, 30, 0.2)
    return found


async def test_invalid_json_on_event_is_dead_lettered_and_store_keeps_serving(stack: Stack) -> None:
    async with connected_bus(stack.settings) as bus:
        await bus.publish_raw(channels.EVENT, b"{not json")
        await bus.publish_raw(
            channels.EVENT, json.dumps({"id": "not-a-uuid", "key": "k", "value": "v"}).encode()
        )
        dead = await _dead_letters(bus, channels.EVENT, 2)
    bodies = {body for body, _ in dead}
    assert b"{not json" in bodies
    assert all(reason.startswith("invalid message:") for _, reason in dead), dead

    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{stack.gateway_url}/api/roundtrip", json={"key": "after-poison", "value": "ok"}
        )
    assert response.status_code == 202
    store = stack.store()
    try:
        await wait_for(lambda: store.get_value("after-poison"), 10)
        assert await store.get_value("after-poison") == "ok"
    finally:
        await store.close()


async def test_invalid_batch_item_is_dead_lettered(stack: Stack) -> None:
    async with connected_bus(stack.settings) as bus:
        await bus.publish_raw(channels.BATCH, json.dumps({"batch_id": "x", "index": -1}).encode())
        dead = await _dead_letters(bus, channels.BATCH, 1)
    assert len(dead) == 1
    assert "batch_id" in dead[0][1]


NEWER_VERSION = Path(__file__).parents[1] / "utils" / "newer_version"
"""On PYTHONPATH, it makes a service process the next version (a KeyValue with `priority`)."""


async def test_a_newer_roundtrip_service_beside_an_older_one_loses_and_dead_letters_nothing(
    private_stack: Stack,
) -> None:
    """A rolling upgrade half done: two roundtrip service processes on the same channel, the
    running version and the next one (whose messages carry a field the store lacks), sent
    100 roundtrips each at once. The store (the running version) stores each once, forwards
    the new field on, and dead-letters nothing."""
    stack = private_stack
    newer = await stack.add_instance("roundtrip", env={"PYTHONPATH": str(NEWER_VERSION)})
    frames: list[dict[str, Any]] = []
    ready = asyncio.Event()
    reader = asyncio.create_task(ws_frames(stack.ws_url, frames, ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        async with httpx.AsyncClient(timeout=30) as client:

            async def post(base: str, prefix: str) -> list[str]:
                ids = []
                for i in range(100):
                    body = {"key": f"{prefix}-{i}", "value": "v"}
                    answer = await client.post(f"{base}/api/roundtrip", json=body)
                    assert answer.status_code == 202, answer.text
                    ids.append(answer.json()["id"])
                return ids

            older_ids, newer_ids = await asyncio.gather(
                post(stack.settings.url_of("roundtrip"), "older"), post(newer.url, "newer")
            )
        expected = set(older_ids) | set(newer_ids)
        await wait_for(lambda: expected <= {f["id"] for f in frames}, 30, 0.1)
        async with connected_bus(stack.settings) as bus:
            dead = [x async for x in bus.iter_dead_letters(channels.EVENT)]
    finally:
        reader.cancel()
    mine = [f for f in frames if f["id"] in expected]
    assert len(mine) == len(expected), "each once"
    assert {f["id"]: f.get("priority") for f in mine} == {
        **dict.fromkeys(older_ids),
        **dict.fromkeys(newer_ids, 1),
    }
    assert dead == []


async def test_an_operator_lists_requeues_and_drops_dead_letters(stack: Stack) -> None:
    """A poison message is listed with its reason, published again repaired and dropped; a
    good message that failed
    for a cause since fixed (dead-lettered here as the store does after its deliveries) is
    requeued twice over and its roundtrip completes once."""
    kv = KeyValue(key=f"requeued-{uuid4().hex[:6]}", value="fixed")
    frames: list[dict[str, Any]] = []
    ready = asyncio.Event()
    reader = asyncio.create_task(ws_frames(stack.ws_url, frames, ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        async with connected_bus(stack.settings) as bus:
            name = bus.name(channels.EVENT)
            poisoned = {"id": str(uuid4()), "key": "", "value": "v"}
            poison = json.dumps(poisoned).encode()
            await bus.publish_raw(channels.EVENT, poison, message_id="poison-to-drop")
            for _ in range(2):  # the same message dead twice: requeued, it is stored once
                await bus.dead_letter(
                    name, kv.model_dump_json().encode(), {}, "handler failed 5 times",
                    message_id=str(kv.id), deliveries=5,
                )  # fmt: skip

            async def three() -> bool:
                return await bus.dead_letter_count(channels.EVENT) == 3

            await wait_for(three, 30, 0.2)
            listed = await bus.dead_letters(channels.EVENT)
            assert await bus.dead_letters(channels.EVENT) == listed, "listing takes nothing"
            bad = next((d for d in listed if d.message_id == "poison-to-drop"), None)
            assert bad is not None, [(d.message_id, d.reason[:40]) for d in listed]
            assert bad.reason.startswith("invalid message:")
            assert bad.body == poison
            assert bad.dead_at is not None
            good = [d for d in listed if d.message_id == str(kv.id)]
            assert [(d.reason, d.deliveries) for d in good] == [("handler failed 5 times", 5)] * 2

            # Fixed: the operator publishes it again repaired and drops the dead one. The same
            # roundtrip id (what idempotency is keyed on), a transport id of its own: NATS
            # would take the first one's, within its duplicate window, for that message again.
            repaired = {**poisoned, "key": f"repaired-{uuid4().hex[:6]}"}
            await bus.publish_raw(
                channels.EVENT, json.dumps(repaired).encode(), message_id="poison-repaired"
            )
            assert await bus.drop_dead(channels.EVENT, [bad.id]) == [bad.id]
            assert await bus.requeue_dead(channels.EVENT, None) == [d.id for d in good]
            assert await bus.dead_letter_count(channels.EVENT) == 0
            both = {str(kv.id), repaired["id"]}
            await wait_for(lambda: both <= {f["id"] for f in frames}, 30, 0.1)
            await asyncio.sleep(1)  # time for a second frame, were there one
    finally:
        reader.cancel()
    assert [f["value"] for f in frames if f["id"] == str(kv.id)] == ["fixed"]
    assert [f["key"] for f in frames if f["id"] == repaired["id"]] == [repaired["key"]]
    store = stack.store()
    try:
        logged = [e async for e in store.events.pages()]
        assert sum(1 for page in logged for e in page if e.message_id == str(kv.id)) == 1
    finally:
        await store.close()
