"""Poison messages go to the dead-letter queue with the reason; the service keeps serving."""

import json
from typing import Any

import httpx
import pytest

from msarch import channels
from msarch.bus import Bus
from msarch.testing.stack import Stack, wait_for
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
