"""Faults 6 and 7 of issue 7: poison messages on every channel, and one message three times."""

import asyncio
import json
from typing import Any

import httpx
import pytest

from msarch import channels
from msarch.bus import Bus
from msarch.messages import KeyValue
from msarch.testing.stack import Stack, wait_for, ws_frames
from tests.utils.broker import connected_bus
from tests.utils.figures import Figures

pytestmark = pytest.mark.faults

POISON = {
    "bad-json": b'{"key": "k", "value": ',
    "wrong-schema": json.dumps({"id": "not-a-uuid", "batch_id": 7, "status": "Sideways"}).encode(),
    "oversized": json.dumps({"key": "big", "value": "x" * (1024 * 1024 + 1)}).encode(),
}
"""Each is invalid on every channel; the oversized one is over 1 MiB."""


async def _drain_dead_letters(
    bus: Bus[Any], channel: channels.Channel, expected: int
) -> list[tuple[bytes, str]]:
    found: list[tuple[bytes, str]] = []

    async def enough() -> bool:
        found.extend([x async for x in bus.iter_dead_letters(channel)])
        return len(found) >= expected

    await wait_for(enough, 30, 0.2)
    await asyncio.sleep(1.0)  # anything more would show up now
    found.extend([x async for x in bus.iter_dead_letters(channel)])
    return found


async def test_poison_on_every_channel_is_dead_lettered_and_traffic_flows(
    stack: Stack, figures: Figures
) -> None:
    injected: dict[str, int] = {}
    refused: dict[str, int] = {}
    dead: dict[str, list[tuple[bytes, str]]] = {}
    async with connected_bus(stack.settings) as bus:
        for channel in channels.ALL:
            injected[channel.name] = refused[channel.name] = 0
            for body in POISON.values():
                try:
                    await bus.publish_raw(channel, body)
                except Exception:
                    # NATS refuses a payload over its max_payload (1 MiB) at the door.
                    refused[channel.name] += 1
                else:
                    injected[channel.name] += 1
            # Traffic between the poison: it must still flow.
        frames: list[dict[str, Any]] = []
        ready = asyncio.Event()
        reader = asyncio.create_task(ws_frames(stack.ws_url, frames, ready))
        await asyncio.wait_for(ready.wait(), 10)
        try:
            async with httpx.AsyncClient(timeout=60) as client:
                roundtrip = await client.post(
                    f"{stack.gateway_url}/api/roundtrip",
                    json={"key": "after-poison", "value": "ok"},
                )
                batch = await client.post(f"{stack.gateway_url}/api/batch", json={"size": 50})
            await wait_for(lambda: any(f["key"] == "after-poison" for f in frames), 15)
        finally:
            reader.cancel()
        for channel in channels.ALL:
            dead[channel.name] = await _drain_dead_letters(bus, channel, injected[channel.name])
    reasons = [reason for letters in dead.values() for _, reason in letters]
    figures(
        **{f"injected_{name}": n for name, n in injected.items()},
        **{f"dead_{name}": len(letters) for name, letters in dead.items()},
        refused_by_broker=sum(refused.values()),
        roundtrip_after=roundtrip.status_code,
        batch_after=batch.status_code,
    )
    assert roundtrip.status_code == 202
    assert batch.status_code == 200, batch.text
    for channel in channels.ALL:
        assert len(dead[channel.name]) == injected[channel.name], channel.name
        assert injected[channel.name] >= 2
    assert all(r.startswith("invalid message:") for r in reasons), reasons
    assert all("validation error" in r for r in reasons), reasons


async def test_same_message_three_times_is_one_write_one_event_one_push(
    stack: Stack, figures: Figures
) -> None:
    """Fault 7 (moved here from tests/e2e/test_event_log.py)."""
    frames: list[dict[str, Any]] = []
    ready = asyncio.Event()
    reader = asyncio.create_task(ws_frames(stack.ws_url, frames, ready))
    await asyncio.wait_for(ready.wait(), 10)
    kv = KeyValue(key="thrice", value="once")
    store = stack.store()
    start = await store.last_event_id()
    try:
        async with connected_bus(stack.settings) as bus:
            for _ in range(3):
                await bus.publish(channels.EVENT, kv, message_id=str(kv.id))
        await wait_for(lambda: any(f["id"] == str(kv.id) for f in frames), 10)
        await asyncio.sleep(1.0)  # time for the two repeats to arrive, and change nothing
        events = [
            e for e in await store.read_events(start, 10_000) if e.payload.get("id") == str(kv.id)
        ]
        pushes = sum(1 for f in frames if f["id"] == str(kv.id))
        value = await store.get_value("thrice")
    finally:
        reader.cancel()
        await store.close()
    figures(published=3, events=len(events), ws_pushes=pushes, value=value)
    assert len(events) == 1
    assert pushes == 1
    assert value == "once"
