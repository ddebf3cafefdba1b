"""The batch flow through the gateway, on the real RabbitMQ and Redis."""

import asyncio
import random
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest

from msarch import channels
from msarch.messages import item_of
from msarch.observability import TIMEOUT_HEADER
from msarch.testing.load import metric
from msarch.testing.stack import Stack, StackFactory, wait_for
from tests.utils.broker import connected_bus

pytestmark = pytest.mark.e2e


async def _batch(client: httpx.AsyncClient, stack: Stack, size: int | None) -> httpx.Response:
    body = {} if size is None else {"size": size}
    return await client.post(f"{stack.gateway_url}/api/batch", json=body, timeout=120)


async def _assert_stored(client: httpx.AsyncClient, stack: Stack, batch_id: str, size: int) -> None:
    values = await client.get(f"{stack.gateway_url}/api/batch/batchvalues/{batch_id}", timeout=60)
    assert values.status_code == 200
    items = values.json()
    assert len(items) == size
    assert items[0] == {"key": f"{batch_id}_key_0", "value": f"{batch_id}_value_0"}
    assert items[-1]["key"] == f"{batch_id}_key_{size - 1}"
    assert [int(i["key"].rsplit("_", 1)[1]) for i in items] == list(range(size))
    store = stack.store()
    try:
        assert await store.redis.hlen(store.keys.batch(batch_id)) == size
    finally:
        await store.close()


@pytest.mark.parametrize("size", [1, 20, 10_000])
async def test_batch_is_stored_whole(stack: Stack, size: int) -> None:
    async with httpx.AsyncClient() as client:
        response = await _batch(client, stack, size)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "Done"
        assert body["size"] == size
        assert body["elapsed_ms"] > 0
        await _assert_stored(client, stack, body["batch_id"], size)
        listed = await client.get(f"{stack.gateway_url}/api/batch/batchkeys")
        assert body["batch_id"] in listed.json()
        status = await client.get(f"{stack.gateway_url}/api/batch/{body['batch_id']}")
        assert status.json() == {
            "batch_id": body["batch_id"],
            "status": "Done",
            "size": size,
            "stored": size,
            "detail": None,
        }


async def test_default_size_is_twenty(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        response = await _batch(client, stack, None)
    assert response.status_code == 200
    assert response.json()["size"] == 20


@pytest.mark.parametrize("size", [0, -1, 1_000_001, "20", 2.5, None])
async def test_bad_size_is_422(stack: Stack, size: object) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{stack.gateway_url}/api/batch", json={"size": size} if size is not None else [1]
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_batch_is_404(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        values = await client.get(f"{stack.gateway_url}/api/batch/batchvalues/{uuid4()}")
        status = await client.get(f"{stack.gateway_url}/api/batch/{uuid4()}")
    assert values.status_code == 404
    assert status.status_code == 404
    assert values.headers["content-type"] == "application/problem+json"


async def test_listing_is_newest_first_and_paged(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        ids = []
        for _ in range(3):
            response = await _batch(client, stack, 2)
            ids.append(response.json()["batch_id"])
        first = await client.get(f"{stack.gateway_url}/api/batch/batchkeys", params={"limit": 2})
        second = await client.get(
            f"{stack.gateway_url}/api/batch/batchkeys", params={"offset": 2, "limit": 1}
        )
    assert first.json() == [ids[2], ids[1]]
    assert second.json() == [ids[0]]


async def test_shuffled_batch_with_duplicates_completes_once(stack: Stack) -> None:
    batch_id, size = uuid4(), 200
    items = [item_of(batch_id, i, size) for i in range(size)]
    items += random.sample(items, 50)
    random.shuffle(items)
    async with connected_bus(stack.settings) as bus:
        await bus.publish_stream(channels.BATCH, ((f"dup-{i}", it) for i, it in enumerate(items)))
    store = stack.store()
    try:
        await wait_for(lambda: _is_done(store, batch_id), 30)
        assert await store.redis.hlen(store.keys.batch(str(batch_id))) == size
        staged = [e async for e in _events_of(store, batch_id)]
        assert sorted(e["index"] for e in staged if "index" in e) == list(range(size))
    finally:
        await store.close()


async def _is_done(store: object, batch_id: UUID) -> bool:
    state = await store.batch_state(batch_id)  # type: ignore[attr-defined]
    return state is not None and state.status.value == "Done"


async def _events_of(store: object, batch_id: UUID):  # type: ignore[no-untyped-def]
    after = None
    while page := await store.read_events(after, 1000):  # type: ignore[attr-defined]
        for event in page:
            if event.payload.get("batch_id") == str(batch_id):
                yield event.payload
        after = page[-1].id


async def test_concurrent_batches_do_not_mix(stack: Stack) -> None:
    sizes = [50 + 7 * i for i in range(20)]
    async with httpx.AsyncClient() as client:
        responses = await asyncio.gather(*(_batch(client, stack, n) for n in sizes))
        for response, size in zip(responses, sizes, strict=True):
            assert response.status_code == 200, response.text
            await _assert_stored(client, stack, response.json()["batch_id"], size)


async def test_two_store_instances_share_the_work(private_stack: Stack) -> None:
    batches, size = 4, 2_000
    instances = [private_stack.processes["store"], await private_stack.add_instance("store")]
    async with httpx.AsyncClient() as client:
        responses = await asyncio.gather(
            *(_batch(client, private_stack, size) for _ in range(batches))
        )
        for response in responses:
            assert response.status_code == 200, response.text
            await _assert_stored(client, private_stack, response.json()["batch_id"], size)
    channel = private_stack.settings.namespace + channels.BATCH.name
    handled = [
        await metric(p.url, "msarch_messages_consumed_total", channel=channel, outcome="ok")
        for p in instances
    ]
    # A handler that failed nacked its item: each failure is one redelivery, handled again.
    redelivered = sum(
        [
            await metric(p.url, "msarch_messages_consumed_total", channel=channel, outcome="error")
            for p in instances
        ]
    )
    assert all(n > 0 for n in handled), f"one instance did all the work: {handled}"
    assert sum(handled) == batches * size + redelivered, (handled, redelivered)


async def test_a_batch_longer_than_the_gateway_waits_is_answered_timeout_exceeded_in_time(
    stack_with: StackFactory, tmp_path: Path
) -> None:
    """The gateway tells the batch service how long it waits (its route's timeout): a batch
    that cannot be published and stored by then is answered 400 TimeoutExceeded, with its id,
    before the gateway would give up with a 503 of its own that names no batch."""
    config = tmp_path / "gateway.toml"
    config.write_text('[[routes]]\nprefix = "/api/batch"\nservice = "batch"\ntimeout_s = 3\n')
    async with stack_with(gateway_config=str(config)) as stack, httpx.AsyncClient() as client:
        answer = await client.post(
            f"{stack.gateway_url}/api/batch", json={"size": 200_000}, timeout=30
        )
        assert answer.status_code == 400, answer.text
        problem = answer.json()
        assert problem["batch_status"] == "TimeoutExceeded"
        assert "200000 items were not all published in the 3 s" in problem["detail"]
        status = await client.get(f"{stack.gateway_url}/api/batch/{problem['batch_id']}")
        assert status.json()["status"] == "TimeoutExceeded"
        assert status.json()["stored"] == 0
        bad = await client.post(
            f"{stack.settings.url_of('batch')}/api/batch",
            json={"size": 1},
            headers={TIMEOUT_HEADER: "soon"},
        )
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
