"""Poison messages go to the dead-letter queue with the reason; the service keeps serving. A
newer version's message is not poison."""

import asyncio
import json
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


class KeyValueOfANewerVersion(KeyValue):
    """What a roundtrip service one version ahead would send: a field this store lacks."""

    priority: int


async def test_a_newer_producer_next_to_an_older_one_loses_nothing_and_dead_letters_nothing(
    stack: Stack,
) -> None:
    """A rolling upgrade half done: this process publishes as the newer version would, the
    stack's roundtrip service as the running one does, both at once on the same channel.
    The store (the older version) stores each once and forwards the new field on."""
    frames: list[dict[str, Any]] = []
    ready = asyncio.Event()
    reader = asyncio.create_task(ws_frames(stack.ws_url, frames, ready))
    await asyncio.wait_for(ready.wait(), 10)
    newer = [KeyValueOfANewerVersion(key=f"newer-{i}", value="v", priority=i) for i in range(100)]
    try:
        async with connected_bus(stack.settings) as bus, httpx.AsyncClient(timeout=30) as client:

            async def publish_newer() -> None:
                for kv in newer:
                    await bus.publish(channels.EVENT, kv, message_id=str(kv.id))

            async def post_older() -> list[str]:
                ids = []
                for i in range(100):
                    body = {"key": f"older-{i}", "value": "v"}
                    answer = await client.post(f"{stack.gateway_url}/api/roundtrip", json=body)
                    assert answer.status_code == 202, answer.text
                    ids.append(answer.json()["id"])
                return ids

            _, older = await asyncio.gather(publish_newer(), post_older())
            expected = {str(kv.id) for kv in newer} | set(older)
            await wait_for(lambda: expected <= {f["id"] for f in frames}, 30, 0.1)
            dead = [x async for x in bus.iter_dead_letters(channels.EVENT)]
    finally:
        reader.cancel()
    mine = [f for f in frames if f["id"] in expected]
    assert len(mine) == len(expected), "each once"
    assert {f["id"]: f.get("priority") for f in mine if f["key"].startswith("newer-")} == {
        str(kv.id): kv.priority for kv in newer
    }
    assert dead == []
    store = stack.store()
    try:
        assert await store.get_value("newer-99") == "v"
        assert await store.get_value("older-99") == "v"
    finally:
        await store.close()


async def test_an_operator_lists_requeues_and_drops_dead_letters(stack: Stack) -> None:
    """A poison message is listed with its reason and dropped; a good message that failed
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
            poison = json.dumps({"id": str(uuid4()), "key": "", "value": "v"}).encode()
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

            assert await bus.drop_dead(channels.EVENT, [bad.id]) == [bad.id]
            assert await bus.requeue_dead(channels.EVENT, None) == [d.id for d in good]
            assert await bus.dead_letter_count(channels.EVENT) == 0
            await wait_for(lambda: any(f["id"] == str(kv.id) for f in frames), 30, 0.1)
            await asyncio.sleep(1)  # time for a second frame, were there one
    finally:
        reader.cancel()
    assert [f["value"] for f in frames if f["id"] == str(kv.id)] == ["fixed"]
    store = stack.store()
    try:
        logged = [e async for e in store.events.pages()]
        assert sum(1 for page in logged for e in page if e.message_id == str(kv.id)) == 1
    finally:
        await store.close()
