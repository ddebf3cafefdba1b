"""No confirmed roundtrip is lost when the store is killed in the middle of a stream."""

import asyncio

import httpx
import pytest

from tests.utils.stack import Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_store_killed_mid_stream_loses_no_confirmed_roundtrip(private_stack: Stack) -> None:
    total = 600
    confirmed: dict[str, str] = {}
    store_process = private_stack.processes["store"]

    async def send(client: httpx.AsyncClient, i: int) -> None:
        key, value = f"kill-{i}", f"value-{i}"
        response = await client.post(
            f"{private_stack.gateway_url}/api/roundtrip", json={"key": key, "value": value}
        )
        if response.status_code == 202:
            confirmed[key] = value

    async def killer() -> None:
        await wait_for(lambda: len(confirmed) >= total // 3, 60)
        await store_process.kill()
        await asyncio.sleep(1.0)
        await private_stack.restart("store")

    async with httpx.AsyncClient(timeout=15) as client:
        restart = asyncio.create_task(killer())
        window = asyncio.Semaphore(16)

        async def bounded(i: int) -> None:
            async with window:
                await send(client, i)

        await asyncio.gather(*(bounded(i) for i in range(total)))
        await restart

    assert len(confirmed) == total, "the roundtrip service does not depend on the store"
    store = private_stack.store()
    try:

        async def all_stored() -> bool:
            values = await store.redis.mget([store.key("kv", k) for k in confirmed])
            return all(v is not None for v in values)

        await wait_for(all_stored, 60, 0.2)
        values = await store.redis.mget([store.key("kv", k) for k in confirmed])
        assert dict(zip(confirmed, values, strict=True)) == confirmed
        events = await store.redis.xlen(store.key("events"))
        assert events == total, f"{events} events for {total} roundtrips: one each, no duplicate"
    finally:
        await store.close()
