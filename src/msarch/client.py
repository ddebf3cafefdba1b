"""A small client of the stack: one roundtrip, timed from POST to websocket echo."""

import asyncio
import json
import time
from typing import Any

import httpx
import websockets


async def roundtrip_once(
    gateway: str, key: str, value: str, headers: dict[str, str] | None = None, timeout_s: float = 10
) -> tuple[dict[str, Any], float]:
    """POST key/value, wait for its frame on /ws; returns (frame, latency in ms)."""
    ws_url = gateway.replace("http", "ws", 1) + "/ws"
    try:
        socket = await websockets.connect(ws_url, additional_headers=headers or {}, open_timeout=5)
    except OSError as exc:
        raise ConnectionError(f"cannot reach {ws_url}: is the stack up? (`just up`)") from exc
    async with socket:
        started = time.perf_counter()
        async with httpx.AsyncClient(timeout=timeout_s, headers=headers) as http:
            response = await http.post(
                gateway + "/api/roundtrip", json={"key": key, "value": value}
            )
        if response.status_code != 202:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
        sent_id = response.json()["id"]
        async with asyncio.timeout(timeout_s):
            async for frame in socket:
                echo: dict[str, Any] = json.loads(frame)
                if echo.get("id") == sent_id:
                    return echo, (time.perf_counter() - started) * 1000
    raise RuntimeError("the websocket closed before the echo arrived")
