"""Node loss, partitions, a Redis failover and a rolling restart on real clusters (issue 12):
three RabbitMQ nodes or three NATS JetStream servers, Redis with a replica behind three
Sentinels, two instances of every service, all in containers (infra/compose.cluster.yaml).

The first test checks the cluster is what it should be; each after it breaks something, says what
passes, prints what it saw, and leaves the cluster whole for the next.
"""

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import httpx
import pytest

from msarch.bus.rabbit_cluster import apply_policy, work_policy
from msarch.settings import SERVICES
from msarch.storage import Store
from msarch.testing.load import Answer, RoundtripLoad, events_once_stored, refusals
from msarch.testing.stack import wait_for, ws_frames
from tests.utils.cluster import Cluster
from tests.utils.compose import SENTINELS, ComposeError, ComposeStack
from tests.utils.figures import Figures

pytestmark = [pytest.mark.clusters, pytest.mark.containers, pytest.mark.slow]

ROUNDTRIPS = 5_000
BATCH = 20_000
PARTITION_S = 20.0
SMALL_BATCH = 1_000


async def _service_containers(stack: ComposeStack, running_only: bool) -> dict[str, Any]:
    """`docker inspect` of every container of the five services and gateway-2, by name."""
    found = {}
    for service in (*SERVICES, "gateway-2"):
        for name in await stack.containers(service, running_only=running_only):
            found[name] = await stack.inspect(name)
    return found


async def service_starts(stack: ComposeStack) -> dict[str, str]:
    """When each service container last started: unchanged means nothing restarted it."""
    running = await _service_containers(stack, running_only=True)
    return {name: info["State"]["StartedAt"] for name, info in running.items()}


async def restarts_since_up(stack: ComposeStack) -> dict[str, int]:
    """The service containers that their restart policy has restarted, and how often."""
    every = await _service_containers(stack, running_only=False)
    return {name: int(info["RestartCount"]) for name, info in every.items() if info["RestartCount"]}


class Frames:
    """Websocket clients, one through each gateway instance: what every client got."""

    def __init__(self, stack: ComposeStack) -> None:
        self.urls = [
            stack.ws_url,
            stack.ws_url.replace(str(stack.gateway_port), str(stack.gateway2_port)),
        ]
        self.got: list[list[dict[str, Any]]] = [[] for _ in self.urls]
        self._readers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> "Frames":
        ready = [asyncio.Event() for _ in self.urls]
        self._readers = [
            asyncio.create_task(ws_frames(url, got, event))
            for url, got, event in zip(self.urls, self.got, ready, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    def counts(self, ids: set[str]) -> list[Counter[str]]:
        """For each client: how many frames it got of each of `ids`."""
        return [Counter(f["id"] for f in got if f["id"] in ids) for got in self.got]

    def every_client_has(self, ids: set[str]) -> bool:
        return all(ids <= set(count) for count in self.counts(ids))

    async def caught_up(self, after: str, ids: set[str], timeout_s: float = 60) -> list[int]:
        """What a client that resumes as the web client does gets: for each gateway, a new
        socket with ?after=`after` (the log's catch-up, then live); how many of `ids` each
        one is still missing after `timeout_s`."""
        missing = []
        for url in self.urls:
            got: list[dict[str, Any]] = []
            ready = asyncio.Event()
            reader = asyncio.create_task(ws_frames(f"{url}?after={after}", got, ready))
            with contextlib.suppress(TimeoutError):
                await wait_for(lambda got=got: ids <= {f["id"] for f in got}, timeout_s, 0.2)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            missing.append(len(ids - {f["id"] for f in got}))
        return missing


class BatchWatch:
    """Reads every batch hash committed since it started, every 100 ms while running: a
    batch is either absent or whole, never partly visible. (Batches of earlier tests are
    left out: they are whole, and of another size.)"""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sizes_seen: set[int] = set()

    @contextmanager
    def running(self) -> Iterator[None]:
        task = asyncio.create_task(self._watch())
        try:
            yield
        finally:
            task.cancel()

    async def _batches(self) -> set[str]:
        pattern = self.store.keys.matching("batch:*")
        return {
            key
            async for key in self.store.redis.scan_iter(match=pattern)
            if not key.endswith((":staging", ":meta"))
        }

    async def _watch(self) -> None:
        earlier = await self._batches()
        while True:
            for key in await self._batches() - earlier:
                self.sizes_seen.add(await self.store.redis.hlen(key))
            await asyncio.sleep(0.1)


async def sentinel_view(stack: ComposeStack, sentinel: str) -> dict[str, str]:
    """SENTINEL MASTER mymaster as one Sentinel answers it."""
    output = await stack.docker(
        "exec", await stack.container(sentinel), "redis-cli", "-p", "26379",
        "sentinel", "master", "mymaster",
    )  # fmt: skip
    lines = output.splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=True))


@pytest.mark.timeout(900)
async def test_each_engine_is_one_cluster_and_both_gateways_serve(
    cluster: Cluster, figures: Figures
) -> None:
    stack = cluster.stack
    formed = await cluster.formed()
    views = {sentinel: await sentinel_view(stack, sentinel) for sentinel in SENTINELS}
    accepted, batches = [], []
    async with httpx.AsyncClient(timeout=60) as client:
        for gateway in stack.gateway_urls:
            accepted.append(
                await client.post(
                    f"{gateway}/api/roundtrip", json={"key": gateway, "value": "clustered"}
                )
            )
            started = time.monotonic()
            batch = await client.post(f"{gateway}/api/batch", json={"size": SMALL_BATCH})
            batches.append((batch, time.monotonic() - started))
    store = await stack.store()
    try:
        fields = [
            await store.redis.hlen(store.keys.batch(b.json()["batch_id"])) for b, _ in batches
        ]
        values = [await store.get_value(gateway) for gateway in stack.gateway_urls]
    finally:
        await store.close()
    leaders = await cluster.leaders()
    replicas = await cluster.replicas()
    figures(
        backend=cluster.backend,
        replicas=replicas,
        stack_up_s=round(stack.up_s, 1),
        services_restarted_while_starting=await restarts_since_up(stack),
        batch_s=[round(seconds, 2) for _, seconds in batches],
        leaders=leaders,
        redis_primary=await stack.redis_primary(),
    )
    assert formed, f"the {cluster.backend} nodes are one cluster, every node serving"
    for sentinel, view in views.items():
        seen = (view["ip"], view["num-slaves"], view["num-other-sentinels"])
        assert seen == ("redis", "1", "2"), f"{sentinel}: primary, replicas, other Sentinels"
    assert await stack.redis_primary() == "redis"
    assert all(answer.status_code == 202 for answer in accepted), [a.text for a in accepted]
    assert [batch.json()["status"] for batch, _ in batches] == ["Done", "Done"]
    assert fields == [SMALL_BATCH, SMALL_BATCH]
    assert values == ["clustered", "clustered"]
    assert set(leaders.values()) <= set(cluster.nodes), leaders
    assert set(replicas.values()) == {3}, "the work is held on every node"


def _statuses(answers: list[Any]) -> list[tuple[int, int]]:
    return sorted(Counter(a.status for a in answers).items())


def _accepted_every_5_s(answers: list[Answer], start: float, end: float) -> list[int]:
    """How many requests sent in each 5 s from `start` to `end` were answered 202."""
    counts = [0] * max(1, int((end - start) // 5) + 1)
    for a in answers:
        if a.status == 202 and start <= a.started < end:
            counts[int((a.started - start) // 5)] += 1
    return counts


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", ["rabbit"], indirect=True)
async def test_the_delivery_limit_is_a_policy_that_changes_on_a_live_queue(
    cluster: Cluster, figures: Figures
) -> None:
    """The services put delivery limit and dead-lettering in a policy: a new limit (what a
    restart with another MSARCH_DELIVERY_LIMIT applies) takes effect on the queue as it is."""
    before = await cluster.queue("event")
    addresses = [await cluster.stack.service_address(node) for node in cluster.nodes]
    management = ",".join(f"http://guest:guest@{address}:15672" for address in addresses)
    definition = {**before["effective_policy_definition"], "delivery-limit": 7}
    policy = work_policy(["event", "batch"], definition)
    try:
        await apply_policy(management, "/", before["policy"], policy)

        async def applied() -> bool:
            return bool((await cluster.queue("event"))["effective_policy_definition"] == definition)

        await wait_for(applied, 30, 0.5)
        after = await cluster.queue("event")
    finally:  # as the services set it
        policy["definition"] = before["effective_policy_definition"]
        await apply_policy(management, "/", before["policy"], policy)
    figures(policy=before["policy"], before=before["effective_policy_definition"])
    assert before["policy"] == "msarch-work"
    assert before["effective_policy_definition"] == {
        "delivery-limit": 5,
        "dead-letter-exchange": "msarch.dead",
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
    }
    assert not {"x-delivery-limit", "x-dead-letter-exchange"} & set(before["arguments"])
    assert after["effective_policy_definition"]["delivery-limit"] == 7
    assert after["arguments"] == before["arguments"], "the queue as declared, untouched"


@pytest.mark.timeout(900)
async def test_the_leading_node_killed_while_roundtrips_and_a_batch_flow(
    cluster: Cluster, figures: Figures
) -> None:
    """kill -9 the node leading `event` and `batch`: every 202 stored once, the batch Done
    with every item (on RabbitMQ, or told to the caller and not there at all: see Open),
    never partly visible, every service reconnected by itself."""
    stack = cluster.stack
    node = await cluster.leader()
    leaders = await cluster.lead_all_from(node)
    survivor = next(n for n in cluster.nodes if n != node)
    before = await service_starts(stack)
    store = await stack.store()
    load = RoundtripLoad(stack.gateway_url, f"kill-{cluster.backend}", concurrency=16)
    watch = BatchWatch(store)
    try:
        async with httpx.AsyncClient(timeout=600) as client:
            with watch.running():
                batch = asyncio.create_task(
                    client.post(f"{stack.gateway_url}/api/batch", json={"size": BATCH})
                )
                sending = asyncio.create_task(load.run(ROUNDTRIPS))
                await wait_for(lambda: len(load.confirmed) >= 500, 120)
                killed = await stack.container(node)
                await stack.docker("kill", "--signal", "KILL", killed)
                killed_at = time.monotonic()
                batch_in_flight = not batch.done()

                async def led_elsewhere() -> bool:
                    now = await cluster.leaders(asking=survivor)
                    return all(leader and leader != node for leader in now.values())

                await wait_for(led_elsewhere, 120, 0.2)
                leaderless_s = time.monotonic() - killed_at
                new_leaders = await cluster.leaders(asking=survivor)
                await sending
                answer = await batch
        mine = await events_once_stored(store, load.confirmed)
        body = answer.json()
        fields, state = 0, None
        if "batch_id" in body:
            fields = await store.redis.hlen(store.keys.batch(body["batch_id"]))
            state = await store.batch_state(UUID(body["batch_id"]))
    finally:
        await store.close()
    after = await service_starts(stack)
    # Docker does not restart a container it was told to kill: started again, as a crashed
    # node's restart policy would, and back in the cluster for the next test.
    await stack.docker("start", killed)
    started_at = time.monotonic()
    await wait_for(cluster.whole, 300, 1)
    rejoined_s = time.monotonic() - started_at
    leaderless = load.during(killed_at, killed_at + leaderless_s)
    figures(
        backend=cluster.backend,
        killed=node,
        leaders_before=leaders,
        leaders_after=new_leaders,
        seconds_without_leader=round(leaderless_s, 2),
        answers_meanwhile=_statuses(leaderless),
        refused_meanwhile=dict(refusals(leaderless)),
        requests=len(load.answers),
        statuses=_statuses(load.answers),
        confirmed=len(load.confirmed),
        stored_once=sum(1 for n in mine.values() if n == 1),
        batch_in_flight_at_kill=batch_in_flight,
        batch_status=answer.status_code,
        batch_detail=body.get("detail") or body.get("status"),
        batch_fields=fields,
        batch_state=state and (state.status.value, state.stored),
        batch_sizes_seen=sorted(watch.sizes_seen),
        restarted_services=sum(before[c] != after.get(c) for c in before),
        killed_node_back_in_cluster_s=round(rejoined_s, 1),
    )
    if answer.status_code != 200:
        print(await _complaints(stack, ("batch", "store", "gateway", "gateway-2")))
    assert batch_in_flight, "the node was killed while the batch was still being taken"
    assert set(load.statuses) <= {202, 503}, load.statuses
    assert set(mine) == set(load.confirmed), "every request answered 202 is stored"
    assert set(mine.values()) == {1}, "and stored once"
    if answer.status_code == 200:
        assert (body["status"], body["size"], fields) == ("Done", BATCH, BATCH)
    elif cluster.backend == "rabbit":
        # Open (docs/reliability.md): on RabbitMQ, 7 runs of 8 on 2026-12-08 had the batch Done;
        # in the eighth a store's connection was closed again and again by the surviving nodes
        # (CHANNEL_ERROR - expected 'channel.open') and the caller was answered 400 with none
        # of the batch visible. That much is asserted.
        assert answer.status_code in (400, 503), answer.text
        assert fields == 0, "a batch that is not Done shows nothing"
    else:
        pytest.fail(f"the batch was not Done: {answer.status_code} {answer.text}")
    assert watch.sizes_seen <= {0, BATCH}, "a batch is never partly visible"
    assert after == before, "every service reconnected by itself, none was restarted"


async def _complaints(stack: ComposeStack, services: tuple[str, ...]) -> str:
    """The WARNING and ERROR lines the services' containers logged: why a batch was not Done."""
    lines = []
    for service in services:
        for name in await stack.containers(service):
            logged = (await stack.logs(name)).splitlines()
            complaints = (line for line in logged if '"WARNING"' in line or '"ERROR"' in line)
            lines += [f"{name}: {line}" for line in complaints]
    return "\n".join(lines[-60:])


@pytest.mark.timeout(900)
async def test_a_partitioned_broker_node_confirms_nothing_and_the_heal_loses_and_repeats_nothing(
    cluster: Cluster, figures: Figures
) -> None:
    """Cut the leading node off for 20 s under load, then heal: nothing answered 202 is lost,
    each is once in the log, never twice on a websocket client, live on every client and on
    every client that resumes from the log; the cut-off node, asked alone at the end of the
    partition, confirms no publish, and the majority goes on confirming roundtrips during it
    (once the services on the cut-off node have left it, MSARCH_BROKER_HEARTBEAT_S after it
    went silent, and the majority has elected new leaders)."""
    stack = cluster.stack
    node = await cluster.leader()
    survivor = next(n for n in cluster.nodes if n != node)
    store = await stack.store()
    load = RoundtripLoad(stack.gateway_url, f"partition-{cluster.backend}", concurrency=8)
    start = await store.last_event_id() or "0-0"
    await cluster.make_probe(survivor)
    try:
        async with Frames(stack) as frames, load.running():
            await wait_for(lambda: len(load.confirmed) >= 300, 120)
            cut_off = await stack.container(node)
            await stack.cut_off(cut_off)
            cut_at = time.monotonic()
            try:
                await asyncio.sleep(PARTITION_S)
                minority = await cluster.publish_alone(node)
                majority = await cluster.publish_alone(survivor)
                majority_leaders = await cluster.leaders(asking=survivor)
            finally:  # whatever happens, the next test gets the cluster whole
                await stack.heal(cut_off)
            healed_at = time.monotonic()
            restarted = await cluster.whole_again(180)
            whole_s = time.monotonic() - healed_at
            confirmed_at_heal = len(load.confirmed)
            await wait_for(lambda: len(load.confirmed) >= confirmed_at_heal + 300, 120)
            confirmed = dict(load.confirmed)  # the load goes on: what was confirmed by now
            mine = await events_once_stored(store, confirmed)
            ids = set(confirmed)
            with contextlib.suppress(TimeoutError):
                await wait_for(lambda: frames.every_client_has(ids), 60, 0.2)
            counts = frames.counts(ids)
            live_missing = [len(ids - set(c)) for c in counts]
            resumed_missing = await frames.caught_up(start, ids)
            missed = set().union(*(ids - set(c) for c in counts))
            if cluster.backend == "nats" and missed:
                # Where live frames went missing: never forwarded (until 2026-12-02 the store
                # spent a message's every delivery on a leaderless stream), or not delivered.
                forwarded = await cluster.forwarded_ids(survivor)
                diagnosis = {
                    "missed_never_in_broadcast_stream": len(missed - forwarded),
                    "broadcast_consumers": await cluster.broadcast_consumers(survivor),
                }
            else:
                diagnosis = {}
    finally:
        await store.close()
    await cluster.drop_probe(survivor)  # the project's own; it goes with the project anyway
    during = load.during(cut_at, healed_at)
    confirmed_during = sum(1 for a in during if a.status == 202)
    figures(
        backend=cluster.backend,
        partitioned=node,
        publish_to_the_cut_off_node=minority,
        publish_to_the_majority=majority,
        majority_leaders=majority_leaders,
        answers_during_partition=_statuses(during),
        refused_during_partition=dict(refusals(during)),
        confirmed_during_partition=confirmed_during,
        accepted_every_5_s_from_the_cut=_accepted_every_5_s(load.answers, cut_at, healed_at + 15),
        seconds_until_whole_after_heal=round(whole_s, 1),
        restarted_to_rejoin=restarted,
        confirmed=len(load.confirmed),
        statuses=_statuses(load.answers),
        stored_once=sum(1 for n in mine.values() if n == 1),
        frames_per_client=[sum(c.values()) for c in counts],
        repeated_frames=[sum(n - 1 for n in c.values()) for c in counts],
        live_frames_missing=live_missing,
        missing_after_resume=resumed_missing,
        **diagnosis,
    )
    assert minority != "confirmed", "the cut-off node takes no write"
    assert confirmed_during > 0, "the majority goes on confirming meanwhile"
    assert resumed_missing == [0, 0], "a client that resumes from the log gets every roundtrip"
    assert set(load.statuses) <= {202, 503}, load.statuses
    assert set(mine) == ids, "every request answered 202 is stored"
    assert set(mine.values()) == {1}, "each once in the event log"
    assert all(set(c.values()) <= {1} for c in counts), "never a frame twice on a client"
    assert live_missing == [0, 0], f"every frame live on every client: {diagnosis}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("cluster", ["rabbit"], indirect=True)
async def test_redis_primary_killed_the_replica_takes_over_and_no_acknowledged_write_is_lost(
    cluster: Cluster, figures: Figures
) -> None:
    """kill -9 the Redis primary after N writes the store acknowledged (WAIT for the replica
    first): the replica is promoted, the services follow it by themselves, all N are there,
    and `msarch replay` finds the log and the projections in agreement. Redis does not depend
    on the broker: this runs on the RabbitMQ cluster only."""
    stack = cluster.stack
    primary = await stack.redis_primary()
    before = await service_starts(stack)
    load = RoundtripLoad(stack.gateway_url, "redis-failover", concurrency=8)
    async with Frames(stack) as frames, load.running():
        await wait_for(lambda: len(load.confirmed) >= 1000, 120)
        # A frame is pushed only after the store's write, WAIT included: acknowledged writes.
        acknowledged = {f["id"] for f in frames.got[0]} & set(load.confirmed)
        # kill -9 of the server; its container (infra/cluster/redis-run.sh) starts it again
        # after 10 s, as a restart policy would, and keeps its name resolving meanwhile.
        await stack.docker(
            "exec", await stack.container(primary), "sh", "-c",
            'kill -9 "$(cat /tmp/redis-server.pid)"',
        )  # fmt: skip
        killed_at = time.monotonic()

        async def promoted() -> bool:
            try:
                return await stack.redis_primary() != primary
            except ComposeError:  # the Sentinels do not agree yet
                return False

        try:
            await wait_for(promoted, 60, 0.2)
        except TimeoutError:
            raise AssertionError(f"no promotion in 60 s:\n{await sentinel_logs(stack)}") from None
        failover_s = time.monotonic() - killed_at
        # With one replica, WAIT 1 holds the store's writes until a replica is back: the old
        # primary, started again, which Sentinel turns into the new primary's replica.
        frames_then = len(frames.got[0])
        await wait_for(lambda: len(frames.got[0]) >= frames_then + 300, 180, 0.2)
        writes_resumed_s = time.monotonic() - killed_at
    new_primary = await stack.redis_primary()
    store = await stack.store()
    try:
        mine = await events_once_stored(store, load.confirmed)
        wait_cost = await wait_cost_ms(store)
    finally:
        await store.close()
    replay = await stack.docker("exec", (await stack.containers("store"))[0], "msarch", "replay")
    await wait_for(cluster.whole, 240, 1)
    after = await service_starts(stack)
    figures(
        killed_primary=primary,
        promoted=new_primary,
        acknowledged_before_kill=len(acknowledged),
        missing_of_those=len(acknowledged - set(mine)),
        failover_s=round(failover_s, 2),
        store_writing_again_after_s=round(writes_resumed_s, 2),
        confirmed=len(load.confirmed),
        statuses=_statuses(load.answers),
        wait_cost_ms=wait_cost,
        replay=replay.strip().splitlines()[-1],
        restarted_services=sum(before[c] != after.get(c) for c in before),
    )
    assert new_primary != primary
    assert acknowledged, "writes were acknowledged before the kill"
    assert acknowledged <= set(mine), "no acknowledged write is missing on the new primary"
    assert set(mine) == set(load.confirmed)
    assert set(mine.values()) == {1}
    assert set(load.statuses) <= {202, 503}, load.statuses
    assert "PASS" in replay, replay
    assert after == before, "the services followed the failover without a restart"


async def sentinel_logs(stack: ComposeStack) -> str:
    """What each Sentinel last logged, and what it answers now."""
    reports = []
    for sentinel in SENTINELS:
        container = await stack.container(sentinel)
        reports.append(f"--- {sentinel}\n{await stack.docker('logs', '--tail', '20', container)}")
    try:
        await stack.redis_primary()
    except ComposeError as exc:
        reports.append(str(exc))
    return "\n".join(reports)


async def wait_cost_ms(store: Store, writes: int = 200) -> dict[str, float]:
    """What waiting for the replica costs one write (median ms): SET alone, SET + WAIT 1."""

    async def median_ms(wait: bool) -> float:
        samples = []
        for n in range(writes):
            started = time.perf_counter()
            async with store.redis.pipeline(transaction=False) as pipe:
                pipe.set(store.keys.matching(f"wait-cost:{n}"), "x", ex=60)
                if wait:
                    pipe.execute_command("WAIT", 1, 2000)
                await pipe.execute()
            samples.append(time.perf_counter() - started)
        return round(sorted(samples)[len(samples) // 2] * 1000, 3)

    return {"set": await median_ms(False), "set_and_wait": await median_ms(True)}


@pytest.mark.timeout(900)
async def test_a_rolling_restart_of_every_broker_node_loses_nothing(
    cluster: Cluster, figures: Figures
) -> None:
    """Restart the broker nodes one at a time under load, each after the cluster is whole
    again: no error but 503s, nothing answered 202 lost."""
    stack = cluster.stack
    store = await stack.store()
    load = RoundtripLoad(stack.gateway_url, f"rolling-{cluster.backend}", concurrency=8)
    restarts: dict[str, float] = {}
    try:
        async with load.running():
            await wait_for(lambda: len(load.confirmed) >= 300, 120)
            for node in cluster.nodes:
                started = time.monotonic()
                await stack.docker(
                    "restart", "--time", "30", await stack.container(node), timeout_s=120
                )
                await wait_for(cluster.formed, 240, 1)
                restarts[node] = round(time.monotonic() - started, 1)
            confirmed_after = len(load.confirmed)
            await wait_for(lambda: len(load.confirmed) >= confirmed_after + 300, 120)
        mine = await events_once_stored(store, load.confirmed)
    finally:
        await store.close()
    figures(
        backend=cluster.backend,
        seconds_until_back_in_cluster_per_node=restarts,
        requests=len(load.answers),
        statuses=_statuses(load.answers),
        confirmed=len(load.confirmed),
        stored_once=sum(1 for n in mine.values() if n == 1),
    )
    assert set(load.statuses) <= {202, 503}, load.statuses
    assert set(mine) == set(load.confirmed)
    assert set(mine.values()) == {1}
