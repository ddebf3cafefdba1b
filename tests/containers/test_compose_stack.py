"""The stack in real containers (issue 10): the local images, compose.yaml's wiring, and faults
done the container way (docker kill, docker stop, scaling).

The tests share one compose project and run in file order; each leaves it healthy for the next.
"""

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from msarch.settings import SERVICES
from msarch.testing.load import RoundtripLoad, events_once_stored, kv_event_ids, metric
from msarch.testing.stack import wait_for, ws_frames
from tests.utils.batch_kill import kill_store_at_half_a_batch
from tests.utils.compose import ComposeStack
from tests.utils.figures import Figures

pytestmark = [pytest.mark.containers, pytest.mark.slow]

BATCH = 10_000


async def healthy_again(stack: ComposeStack, timeout_s: float = 120) -> float:
    """Seconds until every container is healthy and the gateway answers 200."""
    started = time.monotonic()
    await wait_for(stack.healthy, timeout_s, 0.5)
    return time.monotonic() - started


async def passing_instances(stack: ComposeStack, service: str) -> list[dict[str, Any]]:
    """What Consul (the double, in its container) lists as passing for a service."""
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(f"{stack.consul_url}/v1/health/service/{service}?passing=1")
    entries: list[dict[str, Any]] = answer.json()
    return [entry["Service"] for entry in entries]


async def started_at(stack: ComposeStack, service: str) -> dict[str, str]:
    """When each container of a service last started: unchanged means it was not restarted."""
    return {
        name: (await stack.inspect(name))["State"]["StartedAt"]
        for name in await stack.containers(service)
    }


@pytest.mark.timeout(600)
async def test_stack_comes_up_and_each_service_registers_an_address_consul_reaches(
    compose_stack: ComposeStack, figures: Figures
) -> None:
    """Consul checks every instance from its own container: a registration of 127.0.0.1
    (the bug of issue 10) would never pass, and the gateway would answer 503 to everything."""
    stack = compose_stack

    async def each_passing_once() -> bool:
        counts = [len(await passing_instances(stack, s)) for s in SERVICES]
        return counts == [1] * len(SERVICES)

    # A new registration is critical until Consul's first check of it passes (2 s here).
    await wait_for(each_passing_once, 30, 0.5)
    registered: dict[str, tuple[str, str]] = {}
    for service in SERVICES:
        [instance] = await passing_instances(stack, service)
        container = await stack.container(service)
        registered[service] = (instance["Address"], await stack.address(container))
    figures(
        stack_up_s=round(stack.up_s, 1),
        registered={s: a for s, (a, _) in registered.items()},
    )
    for service, (advertised, actual) in registered.items():
        assert advertised == actual, f"{service} advertises {advertised}, runs at {actual}"
        assert not advertised.startswith("127."), service
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{stack.gateway_url}/health")).status_code == 200
        page = await client.get(f"{stack.gateway_url}/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]


async def test_roundtrip_reaches_two_websocket_clients_and_redis(
    compose_stack: ComposeStack, figures: Figures
) -> None:
    stack = compose_stack
    frames: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    ready = (asyncio.Event(), asyncio.Event())
    readers = [asyncio.create_task(ws_frames(stack.ws_url, frames[i], ready[i])) for i in (0, 1)]
    store = await stack.store()
    try:
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 10)
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(
                f"{stack.gateway_url}/api/roundtrip", json={"key": "in-a-container", "value": "ü"}
            )
        assert answer.status_code == 202, answer.text
        sent = answer.json()

        def both_got_it() -> bool:
            return all(any(f["id"] == sent["id"] for f in got) for got in frames)

        await wait_for(both_got_it, 15)
        latency_ms = (time.monotonic() - started) * 1000
        stored = await store.get_value("in-a-container")
    finally:
        for reader in readers:
            reader.cancel()
        await store.close()
    figures(post_to_both_frames_ms=round(latency_ms, 1))
    for got in frames:
        [frame] = [f for f in got if f["id"] == sent["id"]]
        assert (frame["key"], frame["value"]) == ("in-a-container", "ü")
        assert frame["event_id"]
    assert stored == "ü"


@pytest.mark.timeout(300)
async def test_ten_thousand_item_batch_is_done_and_read_back(
    compose_stack: ComposeStack, figures: Figures
) -> None:
    stack = compose_stack
    async with httpx.AsyncClient(timeout=120) as client:
        started = time.monotonic()
        answer = await client.post(f"{stack.gateway_url}/api/batch", json={"size": BATCH})
        elapsed_s = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        body = answer.json()
        status = await client.get(f"{stack.gateway_url}/api/batch/{body['batch_id']}")
        values = await client.get(
            f"{stack.gateway_url}/api/batch/batchvalues/{body['batch_id']}",
            params={"limit": BATCH},
        )
    figures(size=BATCH, seconds=round(elapsed_s, 2), items_per_s=round(BATCH / elapsed_s))
    assert body["status"] == "Done"
    assert status.json()["status"] == "Done"
    assert status.json()["stored"] == BATCH
    assert len(values.json()) == BATCH


@pytest.mark.timeout(300)
async def test_store_container_killed_halfway_through_a_batch_commits_it_whole(
    compose_stack: ComposeStack, figures: Figures
) -> None:
    stack = compose_stack
    container = await stack.container("store")
    store = await stack.store()
    try:
        await kill_store_at_half_a_batch(
            stack.gateway_url,
            store,
            BATCH,
            kill=lambda: stack.docker("kill", container),  # SIGKILL
            restart=lambda: stack.docker("start", container),
            figures=figures,
        )
    finally:
        await store.close()
    await healthy_again(stack)


@pytest.mark.timeout(420)
async def test_broker_container_killed_under_load_loses_no_acknowledged_request(
    compose_stack: ComposeStack, figures: Figures
) -> None:
    stack = compose_stack
    rabbitmq = await stack.container("rabbitmq")
    services_before = {s: await started_at(stack, s) for s in SERVICES}
    load = RoundtripLoad(stack.gateway_url, "broker-killed", concurrency=8)
    store = await stack.store()
    try:
        async with load.running():
            await wait_for(lambda: len(load.confirmed) >= 200, 60)
            await stack.docker("kill", rabbitmq)
            down_at = time.monotonic()
            await asyncio.sleep(3.0)
            await stack.docker("start", rabbitmq)
            up_at = time.monotonic()
            healthy_s = await healthy_again(stack, 180)
            confirmed_before = len(load.confirmed)
            await wait_for(lambda: len(load.confirmed) >= confirmed_before + 200, 60)
        mine = await events_once_stored(store, load.confirmed)
    finally:
        await store.close()
    services_after = {s: await started_at(stack, s) for s in SERVICES}
    failed = [a for a in load.answers if a.status != 202]
    figures(
        broker_down_s=round(up_at - down_at, 1),
        healthy_after_broker_start_s=round(healthy_s, 1),
        requests=len(load.answers),
        confirmed=len(load.confirmed),
        statuses=sorted(load.statuses.items()),
        missing=len(set(load.confirmed) - set(mine)),
        events_twice=sum(1 for n in mine.values() if n > 1),
        restarted_service_containers=sum(services_before[s] != services_after[s] for s in SERVICES),
    )
    assert set(mine) == set(load.confirmed), "every request answered 202 is stored"
    assert set(mine.values()) == {1}
    assert set(load.statuses) <= {202, 503}, load.statuses
    assert all(a.content_type == "application/problem+json" for a in failed)
    assert services_after == services_before, "the services reconnected by themselves"


@pytest.mark.timeout(420)
async def test_scaled_out_every_item_is_stored_once_and_every_client_gets_every_frame(
    compose_stack: ComposeStack, figures: Figures
) -> None:
    """Three competing stores, two websocket instances (each gets every forwarded message)."""
    stack = compose_stack

    async def batch_items_consumed(container: str) -> float:
        url = f"http://{await stack.address(container)}:8004"
        return await metric(url, "msarch_messages_consumed_total", channel="batch", outcome="ok")

    [first_store] = await stack.containers("store")
    before = {first_store: await batch_items_consumed(first_store)}
    await stack.scale(store=3, websocket=2)
    try:
        await healthy_again(stack)

        async def registered_all() -> bool:
            stores = await passing_instances(stack, "store")
            sockets = await passing_instances(stack, "websocket")
            return len(stores) == 3 and len(sockets) == 2

        await wait_for(registered_all, 60, 0.5)
        websockets = await stack.containers("websocket")
        stores = await stack.containers("store")
        # One client on each websocket instance directly, two through the gateway.
        urls = [f"ws://{await stack.address(name)}:8003/ws" for name in websockets]
        urls += [stack.ws_url, stack.ws_url]
        frames: list[list[dict[str, Any]]] = [[] for _ in urls]
        ready = [asyncio.Event() for _ in urls]
        readers = [
            asyncio.create_task(ws_frames(url, frames[i], ready[i])) for i, url in enumerate(urls)
        ]
        store = await stack.store()
        try:
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 15)
            load = RoundtripLoad(stack.gateway_url, "scaled", concurrency=8)
            async with httpx.AsyncClient(timeout=120) as client:
                batch, _ = await asyncio.gather(
                    client.post(f"{stack.gateway_url}/api/batch", json={"size": BATCH}),
                    load.run(500),
                )
            assert load.statuses == {202: 500}, load.statuses
            assert batch.status_code == 200, batch.text
            batch_id = batch.json()["batch_id"]

            def every_client_has_every_frame() -> bool:
                return all(set(load.confirmed) <= {f["id"] for f in got} for got in frames)

            await wait_for(every_client_has_every_frame, 60, 0.2)
            events = await kv_event_ids(store)
            staged = await staged_items(store, batch_id)
            fields = await store.redis.hlen(store.keys.batch(batch_id))
            consumed = {
                name: await batch_items_consumed(name) - before.get(name, 0.0) for name in stores
            }
        finally:
            for reader in readers:
                reader.cancel()
            await store.close()
    finally:
        await stack.scale(store=1, websocket=1)
    per_client = [len({f["id"] for f in got} & set(load.confirmed)) for got in frames]
    duplicates = [len(got) - len({f["id"] for f in got}) for got in frames]
    figures(
        stores=len(stores),
        websockets=len(websockets),
        roundtrips=len(load.confirmed),
        frames_per_client=per_client,
        duplicate_frames=duplicates,
        batch_fields=fields,
        items_staged_twice=sum(1 for n in staged.values() if n > 1),
        batch_items_by_store=[int(n) for n in consumed.values()],
    )
    assert per_client == [len(load.confirmed)] * len(urls)
    assert duplicates == [0] * len(urls)
    assert {i: n for i, n in events.items() if i in load.confirmed} == dict.fromkeys(
        load.confirmed, 1
    )
    assert fields == BATCH
    assert len(staged) == BATCH
    assert set(staged.values()) == {1}, "every item is staged once, whichever store took it"
    assert sum(consumed.values()) >= BATCH, "redeliveries aside, each item was consumed once"
    assert sum(1 for n in consumed.values() if n > 0) >= 2, "the stores competed for the items"


async def staged_items(store: Any, batch_id: str) -> Counter[str]:
    """How many BatchItemStaged events the log has for each item of a batch."""
    counts: Counter[str] = Counter()
    after: str | None = None
    while page := await store.read_events(after, 1000):
        counts.update(
            e.message_id
            for e in page
            if e.type.value == "BatchItemStaged" and e.message_id.startswith(batch_id)
        )
        after = page[-1].id
    return counts


@pytest.mark.timeout(300)
@pytest.mark.parametrize("service", ["store", "roundtrip"])
async def test_docker_stop_lets_in_flight_work_finish(
    compose_stack: ComposeStack, figures: Figures, service: str
) -> None:
    """docker stop sends SIGTERM to PID 1, which is the Python process (`msarch serve`): it
    drains and exits 0 within the grace period; nothing answered 202 is lost."""
    stack = compose_stack
    container = await stack.container(service)
    load = RoundtripLoad(stack.gateway_url, f"stop-{service}", concurrency=8, timeout_s=20)
    store = await stack.store()
    try:
        async with load.running():
            await wait_for(lambda: len(load.confirmed) >= 300, 60)
            started = time.monotonic()
            await stack.docker("stop", "--time", "30", container)
            stop_s = time.monotonic() - started
            state = (await stack.inspect(container))["State"]
            logs = await stack.logs(container)
            await stack.docker("start", container)
            await healthy_again(stack)
        mine = await events_once_stored(store, load.confirmed)
    finally:
        await store.close()
    figures(
        service=service,
        stop_s=round(stop_s, 2),
        exit_code=state["ExitCode"],
        oom_killed=state["OOMKilled"],
        confirmed=len(load.confirmed),
        statuses=sorted(load.statuses.items()),
        missing=len(set(load.confirmed) - set(mine)),
    )
    assert state["ExitCode"] == 0, f"{service} did not exit cleanly on SIGTERM:\n{logs[-3000:]}"
    assert "letting in-flight messages finish" in logs
    assert stop_s < 25, "well within the 30 s grace period: no SIGKILL was needed"
    assert set(mine) == set(load.confirmed)
    assert set(load.statuses) <= {202, 503}, load.statuses
