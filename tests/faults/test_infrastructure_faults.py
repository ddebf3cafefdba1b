"""Faults 3, 4 and 5 of issue 7: the broker restarted, Redis killed, Redis unreachable.

Each uses a server of its own (msarch.testing.servers) or a proxy in front of
the shared Redis (msarch.testing.tcp_proxy): the shared servers are never touched.
"""

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from msarch.settings import SERVICES
from msarch.testing.isolation import TEST_REDIS_URL
from msarch.testing.load import RoundtripLoad, kv_event_ids, metric, missing_keys
from msarch.testing.servers import PrivateRedis, private_broker
from msarch.testing.stack import Stack, StackFactory, wait_for
from msarch.testing.tcp_proxy import TcpProxy
from tests.utils.figures import Figures

pytestmark = [pytest.mark.faults, pytest.mark.slow]

ROUTE_TIMEOUT_S = 10.0
"""The gateway's timeout on /api/roundtrip (apps/gateway/upstreams.py)."""


async def _all_healthy(stack: Stack) -> bool:
    async with httpx.AsyncClient(timeout=3) as client:
        for service in SERVICES:
            try:
                answer = await client.get(stack.processes[service].url + "/health")
            except httpx.HTTPError:
                return False
            if answer.status_code != 200:
                return False
    return True


def _pids(stack: Stack) -> dict[str, int | None]:
    return {s: p.process.pid if p.process else None for s, p in stack.processes.items()}


@pytest.mark.timeout(300)
async def test_broker_restart_under_load_loses_nothing_and_reconnects(
    backend: str, stack_with: StackFactory, tmp_path: Path, figures: Figures
) -> None:
    """Fault 3: kill -9 the broker while roundtrips and a batch flow, start it again."""
    broker = private_broker(backend, tmp_path / "broker")
    await broker.start()
    try:
        async with stack_with(broker_url=broker.url) as stack:
            pids = _pids(stack)
            load = RoundtripLoad(stack.gateway_url, "broker", concurrency=8)
            stop = asyncio.Event()
            sending = asyncio.create_task(load.run(until=stop))
            async with httpx.AsyncClient(timeout=120) as client:
                batch = asyncio.create_task(
                    client.post(f"{stack.gateway_url}/api/batch", json={"size": 2000})
                )
                await wait_for(lambda: len(load.confirmed) >= 50, 60)
                await broker.kill()
                down_at = time.monotonic()
                await asyncio.sleep(3.0)
                await broker.start()
                up_at = time.monotonic()
                await wait_for(lambda: _all_healthy(stack), 60, 0.2)
                healthy_at = time.monotonic()
                confirmed_before = len(load.confirmed)
                await wait_for(lambda: len(load.confirmed) >= confirmed_before + 50, 60)
                resumed_at = time.monotonic()
                stop.set()
                await sending
                batch_answer = await batch
            store = stack.store()
            try:

                async def all_stored() -> bool:
                    return not await missing_keys(store, load.confirmed)

                await wait_for(all_stored, 60, 0.5)
                batch_body = batch_answer.json()
                batch_fields = None
                if batch_answer.status_code == 200:
                    batch_fields = await store.redis.hlen(store.keys.batch(batch_body["batch_id"]))
                elif "batch_id" in batch_body:
                    await asyncio.sleep(2)
                    batch_fields = await store.redis.hlen(store.keys.batch(batch_body["batch_id"]))
            finally:
                await store.close()
            same_processes = _pids(stack) == pids and all(
                p.running for p in stack.processes.values()
            )
    finally:
        await broker.stop()
    outage = load.during(down_at, up_at)
    failed = [a for a in load.answers if a.status != 202]
    figures(
        backend=backend,
        broker_down_s=round(up_at - down_at, 1),
        broker_start_s=round(broker.started_in_s, 1),
        healthy_after_broker_up_s=round(healthy_at - up_at, 1),
        first_202s_after_broker_up_s=round(resumed_at - up_at, 1),
        requests=len(load.answers),
        confirmed=len(load.confirmed),
        statuses=sorted(load.statuses.items()),
        outage_requests=len(outage),
        outage_max_latency_s=round(max((a.seconds for a in outage), default=0), 2),
        non_202_max_latency_s=round(max((a.seconds for a in failed), default=0), 2),
        batch_status=batch_answer.status_code,
        batch_fields=batch_fields,
        restarted_services=0 if same_processes else "some",
    )
    assert same_processes, "every service reconnected by itself"
    assert set(load.statuses) <= {202, 503}, load.statuses
    assert all(a.content_type == "application/problem+json" for a in failed)
    assert max((a.seconds for a in failed), default=0) < ROUTE_TIMEOUT_S
    # Where the kill fell decides: after every item was published and stored (200), while
    # publishing (503, not confirmed), or between (items delayed past the batch timeout: 400).
    assert batch_answer.status_code in (200, 400, 503), batch_answer.text
    if batch_answer.status_code == 200:
        assert (batch_body["status"], batch_body["size"]) == ("Done", 2000)
        assert batch_fields == 2000
    else:
        assert batch_answer.headers["content-type"] == "application/problem+json"
        assert "batch_id" in batch_body, batch_body
        if batch_answer.status_code == 400:
            assert batch_body["batch_status"] == "TimeoutExceeded", batch_body
        else:
            assert batch_answer.headers["retry-after"] == "2"
        assert batch_fields == 0, "a failed batch shows nothing"


@pytest.mark.timeout(240)
async def test_redis_killed_and_restarted_loses_no_acknowledged_write(
    stack_with: StackFactory, tmp_path: Path, figures: Figures
) -> None:
    """Fault 4: kill -9 a Redis with AOF fsync always after N acknowledged writes."""
    redis = PrivateRedis(tmp_path / "redis")
    await redis.start()
    try:
        async with stack_with(redis_url=redis.url) as stack:
            before = RoundtripLoad(stack.gateway_url, "before", concurrency=16)
            await before.run(500)
            store = stack.store()
            try:
                await wait_for(lambda: _none_missing(store, before), 60, 0.2)
                async with httpx.AsyncClient(timeout=60) as client:
                    batch = await client.post(f"{stack.gateway_url}/api/batch", json={"size": 1000})
                assert batch.status_code == 200, batch.text
                events_before = await store.events.length()
                await store.close()
                await redis.kill()
                down_at = time.monotonic()
                # Accepted while Redis is down: the store holds them until it is back.
                during = RoundtripLoad(stack.gateway_url, "during", concurrency=16)
                await during.run(200)
                await redis.start()
                up_at = time.monotonic()
                store = stack.store()  # the test's own connections died with the server
                await wait_for(lambda: _none_missing(store, during), 60, 0.2)
                stored_at = time.monotonic()
                await wait_for(lambda: _all_healthy(stack), 30, 0.2)
                healthy_at = time.monotonic()
                missing = await missing_keys(store, before.confirmed)
                batch_fields = await store.redis.hlen(store.keys.batch(batch.json()["batch_id"]))
                events = await kv_event_ids(store)
            finally:
                await store.close()
    finally:
        await redis.stop()
    figures(
        acknowledged_roundtrips=len(before.confirmed),
        acknowledged_batch_items=1000,
        events_before_kill=events_before,
        missing=len(missing),
        batch_fields_after=batch_fields,
        accepted_while_down=len(during.confirmed),
        redis_down_s=round(up_at - down_at, 1),
        redis_restart_s=round(redis.started_in_s, 2),
        stored_after_restart_s=round(stored_at - up_at, 1),
        healthy_after_restart_s=round(healthy_at - up_at, 1),
        events_twice=sum(1 for n in events.values() if n > 1),
    )
    assert missing == []
    assert batch_fields == 1000
    assert set(events) == set(before.confirmed) | set(during.confirmed)
    assert set(events.values()) == {1}


async def _none_missing(store: object, load: RoundtripLoad) -> bool:
    return not await missing_keys(store, load.confirmed)  # type: ignore[arg-type]


@pytest.mark.timeout(240)
async def test_redis_unreachable_for_10_s_holds_messages_without_a_hot_loop(
    stack_with: StackFactory, figures: Figures
) -> None:
    """Fault 5: every service's Redis connection goes through a proxy that is cut for 10 s."""
    redis_port = int(TEST_REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(redis_port)
    await proxy.start()
    outage_s = 10.0
    try:
        async with stack_with(redis_url=f"redis://127.0.0.1:{proxy.port}/9") as stack:
            store_url = stack.processes["store"].url
            channel = stack.settings.namespace + "event"

            async def consumed(outcome: str) -> float:
                return await metric(
                    store_url, "msarch_messages_consumed_total", channel=channel, outcome=outcome
                )

            async def retries() -> float:
                return await metric(store_url, "msarch_redis_retries_total", service="store")

            load = RoundtripLoad(stack.gateway_url, "outage", concurrency=8)
            stop = asyncio.Event()
            sending = asyncio.create_task(load.run(until=stop))
            await wait_for(lambda: len(load.confirmed) >= 100, 60)
            await proxy.cut()
            cut_at = time.monotonic()
            await asyncio.sleep(1.0)  # what was in flight at the cut is now held too
            ok_start, errors_start, retries_start = (
                await consumed("ok"),
                await consumed("error"),
                await retries(),
            )
            await asyncio.sleep(outage_s - 1.0 - (time.monotonic() - cut_at - 1.0))
            ok_end, errors_end, retries_end = (
                await consumed("ok"),
                await consumed("error"),
                await retries(),
            )
            measured_s = time.monotonic() - cut_at - 1.0
            await proxy.restore()
            restored_at = time.monotonic()
            accepted_in_outage = len(load.during(cut_at, restored_at))
            stop.set()
            await sending
            store = stack.store()
            try:

                async def all_stored() -> bool:
                    return not await missing_keys(store, load.confirmed)

                await wait_for(all_stored, 90, 0.2)
                drained_s = time.monotonic() - restored_at
                events = await kv_event_ids(store)
            finally:
                await store.close()
    finally:
        await proxy.stop()
    figures(
        outage_s=outage_s,
        acked_during_outage=int(ok_end - ok_start),
        redeliveries_per_s=round((errors_end - errors_start) / measured_s, 2),
        redis_retries_per_s=round((retries_end - retries_start) / measured_s, 1),
        requests_sent_in_outage=accepted_in_outage,
        confirmed=len(load.confirmed),
        statuses=sorted(load.statuses.items()),
        backlog_drained_s=round(drained_s, 1),
        events_twice=sum(1 for n in events.values() if n > 1),
    )
    assert ok_end - ok_start == 0, "nothing is acked while Redis is unreachable"
    assert errors_end - errors_start == 0, "held, not nacked and redelivered"
    # Each held message retries with a backoff growing to 2 s: well under one try a second.
    assert (retries_end - retries_start) / measured_s <= stack.settings.prefetch
    assert set(load.confirmed) <= set(events)
    assert set(events.values()) == {1}
