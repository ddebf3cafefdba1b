"""The roundtrip flow through the gateway, on the real RabbitMQ and Redis."""

import asyncio
from typing import Any

import httpx
import pytest

from msarch.testing.stack import Stack, wait_for, ws_frames

pytestmark = pytest.mark.e2e


async def test_post_reaches_two_websocket_clients_and_redis(stack: Stack) -> None:
    frames_a: list[dict[str, Any]] = []
    frames_b: list[dict[str, Any]] = []
    ready_a, ready_b = asyncio.Event(), asyncio.Event()
    readers = [
        asyncio.create_task(ws_frames(stack.ws_url, frames_a, ready_a)),
        asyncio.create_task(ws_frames(stack.ws_url, frames_b, ready_b)),
    ]
    await asyncio.wait_for(asyncio.gather(ready_a.wait(), ready_b.wait()), 10)
    value = "grüße, 世界 🚀 \u0000 \u202e"
    try:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{stack.gateway_url}/api/roundtrip", json={"key": "k-é", "value": value}
            )
        assert response.status_code == 202
        body = response.json()
        assert body["key"] == "k-é"
        assert body["value"] == value
        for frames in (frames_a, frames_b):
            await wait_for(lambda f=frames: any(x["id"] == body["id"] for x in f), 10)
            echo = next(x for x in frames if x["id"] == body["id"])
            assert echo["value"] == value
    finally:
        for reader in readers:
            reader.cancel()
    store = stack.store()
    try:
        assert await store.get_value("k-é") == value
    finally:
        await store.close()


async def test_invalid_input_is_problem_json(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        url = f"{stack.gateway_url}/api/roundtrip"
        cases = [
            await client.post(
                url, content=b"{not json", headers={"content-type": "application/json"}
            ),
            await client.post(url, json={"key": "", "value": "v"}),
            await client.post(url, json={"key": "k" * 513, "value": "v"}),
            await client.post(url, json={"key": "k", "value": "é" * 40_000}),
            await client.post(url, json={"value": "no key"}),
        ]
        too_big = await client.post(url, json={"key": "k", "value": "v" * 600_000})
    for response in cases:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Invalid input"
    assert too_big.status_code == 413
    assert too_big.headers["content-type"] == "application/problem+json"


async def test_request_id_is_passed_through(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{stack.gateway_url}/api/roundtrip",
            json={"key": "rid", "value": "v"},
            headers={"X-Request-ID": "trace-me-123"},
        )
    assert response.status_code == 202
    assert response.headers["x-request-id"] == "trace-me-123"


async def test_service_down_gives_503_problem_and_recovers(private_stack: Stack) -> None:
    await private_stack.processes["roundtrip"].stop()
    async with httpx.AsyncClient(timeout=10) as client:
        url = f"{private_stack.gateway_url}/api/roundtrip"
        down = await client.post(url, json={"key": "k", "value": "v"})
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert int(down.headers["retry-after"]) > 0
        assert "roundtrip" in down.json()["detail"]
        await private_stack.restart("roundtrip")
        up = await client.post(url, json={"key": "k", "value": "v"})
        assert up.status_code == 202


async def test_websocket_to_a_stopped_service_closes_with_try_again_later(
    private_stack: Stack,
) -> None:
    import websockets

    await private_stack.processes["websocket"].stop()
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with websockets.connect(private_stack.ws_url) as socket:
            await asyncio.wait_for(socket.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1013
