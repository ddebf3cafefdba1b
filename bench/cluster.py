"""`python -m bench cluster`: what the three-node cluster costs against one node, in one run.

The single stack (infra/compose.yaml: one RabbitMQ, one Redis, one instance of each service)
is brought up, measured and removed; then the cluster stack (infra/compose.cluster.yaml:
three RabbitMQ nodes, Redis primary + replica behind three Sentinels, two instances of each
service, two gateways), measured the same way and removed. Both in containers built here
(infra/local), on the same machine, one after the other. Each stack, in order:

- idle: every container's CPU rate at rest (its healthcheck, timers), taken off the figures;
- publisher confirms: raw aio-pika from this host to a RabbitMQ node at its container address,
  persistent messages to a quorum queue of its own (`bench-confirms`, one member per node),
  one confirm at a time, then pipelined (a window of outstanding confirms); deleted after;
- POST /api/roundtrip -> the websocket frame of that id, one at a time, through the gateway;
- CPU per roundtrip of each service (cgroup, summed over its instances) under a fixed load
  of roundtrips through the gateway(s), until the event log holds every accepted one;
- POST /api/batch through the gateway, twice: items/s, and CPU per item of each service.

It needs Docker and takes the machine for ~15 minutes, so it is not in the default set. On a
machine whose Docker others use too, hold their lock:
`flock /tmp/msarch-docker.lock .venv/bin/python -m bench cluster`.
"""

import asyncio
import atexit
import os
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar
from uuid import uuid4

import aio_pika
import httpx
import nats
from nats.js.api import StorageType, StreamConfig

from bench.container_cpu import (
    Container,
    CpuSample,
    cpu_ns_per_unit,
    idle_rates,
    per_core,
    sample,
    usage_file,
)
from bench.event_log import events_length, wait_for_events
from bench.report import print_table, ratio_text
from bench.roundtrip import frame_latency
from msarch.testing.load import RoundtripLoad, percentile_ms
from tests.utils.compose import COMPOSE, NATS_SERVERS, RABBITMQ_NODES, ComposeStack

STACKS = ("single", "cluster")
SERVICES = ("gateway", "roundtrip", "batch", "websocket", "store")
ROUNDTRIP_PATH = ("gateway", "roundtrip", "store", "websocket")
BATCH_PATH = ("gateway", "batch", "store")
BROKERS = {"rabbit": "rabbitmq", "nats": "nats"}
"""The broker's containers (their service group) by backend."""
BROADCAST = frozenset({"websocket"})
"""Services each instance of which handles every unit (forward_roundtrip is fanned out to all)."""
QUEUE = "bench-confirms"
BODY = b"x" * 200  # about a BatchItem's JSON
VALUE = "v" * 32
BATCH_TIMEOUT_S = 600.0
DRAIN_TIMEOUT_S = 300.0
SETTLE_S = 2.0
"""After the log holds every roundtrip: the forward to the websocket service and the store's
mark_forwarded come just after the event."""

T = TypeVar("T")


@dataclass(frozen=True)
class ClusterOptions:
    confirms: int = 3000
    """messages per confirm mode"""
    window: int = 64
    """outstanding confirms when pipelined"""
    samples: int = 150
    """sequential POST -> websocket frame samples"""
    roundtrips: int = 2000
    """the fixed load that CPU per roundtrip is measured over"""
    concurrency: int = 16
    items: int = 10_000
    batch_runs: int = 2
    idle_s: float = 20.0
    """how long each container's idle CPU rate is measured (4 healthchecks)"""


@dataclass
class BenchCompose(ComposeStack):
    """A ComposeStack with a project name of the benchmark's and a batch timeout long enough
    for its batches on a busy machine (MSARCH_BATCH_TIMEOUT_S, which compose.yaml passes
    through; compose.cluster.yaml sets its own, 60 s, enough for 10,000 items at 170/s)."""

    project: str = field(default_factory=lambda: f"msarch-bench-{uuid4().hex[:8]}")
    batch_timeout_s: float = BATCH_TIMEOUT_S

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "MSARCH_BATCH_TIMEOUT_S": f"{self.batch_timeout_s:g}"}


_UP: dict[str, dict[str, str]] = {}
"""project -> compose env of every stack brought up and not yet removed (for atexit)."""


def _remove_leftover_stacks() -> None:
    """At exit (a second Ctrl-C during the async clean-up, say): remove what is still up."""
    for project, env in list(_UP.items()):
        print(f"bench: removing compose project {project}", flush=True)
        subprocess.run(
            [str(COMPOSE), "down", "--volumes", "--remove-orphans"],
            env={**os.environ, **env},
            capture_output=True,
            timeout=300,
            check=False,
        )
        _UP.pop(project, None)


atexit.register(_remove_leftover_stacks)


@asynccontextmanager
async def stack_up(stack: ComposeStack) -> AsyncIterator[ComposeStack]:
    """The stack up inside the block; removed (containers, network, volumes) on any exit."""
    _UP[stack.project] = stack.env
    try:
        print(f"bench: {stack.stack} stack: compose up ({stack.project}) ...", flush=True)
        await stack.up()
        print(f"bench: {stack.stack} stack up in {stack.up_s:.0f} s", flush=True)
        yield stack
    finally:
        print(f"bench: {stack.stack} stack: compose down ...", flush=True)
        await stack.down()
        _UP.pop(stack.project, None)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def project_containers(stack: ComposeStack) -> list[Container]:
    """Every running container of the project, by full id, with its compose service."""
    output = await stack.docker(
        "ps", "--no-trunc",
        "--filter", f"label=com.docker.compose.project={stack.project}",
        "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}',
    )  # fmt: skip
    return [
        Container(cid, service, usage_file(cid))
        for cid, service in (line.split() for line in output.splitlines() if line.strip())
    ]


# -- publisher confirms ---------------------------------------------------------------------


async def _publish_pipelined(
    exchange: aio_pika.abc.AbstractExchange, count: int, window: int
) -> None:
    pending: set[asyncio.Future[Any]] = set()
    for _ in range(count):
        message = aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        pending.add(asyncio.ensure_future(exchange.publish(message, routing_key=QUEUE)))
        if len(pending) >= window:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                future.result()  # a nack or a returned message raises here
    await asyncio.gather(*pending)


async def _timed(work: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await work()
    return time.perf_counter() - started


async def bench_confirms(stack: ComposeStack, options: ClusterOptions) -> dict[str, Any]:
    node = "rabbitmq" if stack.stack == "single" else RABBITMQ_NODES[0]
    nodes = 1 if stack.stack == "single" else len(RABBITMQ_NODES)
    address = await stack.service_address(node)
    connection = await aio_pika.connect(f"amqp://guest:guest@{address}:5672/", timeout=30)
    async with connection:
        transport = connection.transport
        version = (
            str(transport.connection.server_properties.get("version", "?")) if transport else "?"
        )
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            QUEUE,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-quorum-initial-group-size": nodes},
        )
        exchange = channel.default_exchange

        async def one_at_a_time(count: int) -> None:
            for _ in range(count):
                message = aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await exchange.publish(message, routing_key=QUEUE)

        try:
            await one_at_a_time(50)  # warm-up
            leader = await stack.quorum_queue_leader(QUEUE) if nodes > 1 else node
            one_s = await _timed(lambda: one_at_a_time(options.confirms))
            piped_s = await _timed(
                lambda: _publish_pipelined(exchange, options.confirms, options.window)
            )
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    return {
        "node": node,
        "queue_members": nodes,
        "queue_leader": leader,
        "rabbitmq": version,
        "messages": options.confirms,
        "window": options.window,
        "one_at_a_time_msgs_per_s": round(options.confirms / one_s, 1),
        "pipelined_msgs_per_s": round(options.confirms / piped_s, 1),
    }


async def bench_nats_confirms(stack: ComposeStack, options: ClusterOptions) -> dict[str, Any]:
    """The same for NATS: js.publish to a file stream of its own, R1 on the single server,
    R3 (one replica per server) on the cluster; each PubAck awaited, then a window of them."""
    server = "nats" if stack.stack == "single" else NATS_SERVERS[0]
    replicas = 1 if stack.stack == "single" else len(NATS_SERVERS)
    client = await nats.connect(f"nats://{await stack.service_address(server)}:4222")
    try:
        js = client.jetstream()
        await js.add_stream(
            StreamConfig(
                name=QUEUE, subjects=[QUEUE], num_replicas=replicas, storage=StorageType.FILE
            )
        )

        async def one_at_a_time(count: int) -> None:
            for _ in range(count):
                await js.publish(QUEUE, BODY)

        async def pipelined(count: int) -> None:
            pending: set[asyncio.Future[Any]] = set()
            for _ in range(count):
                pending.add(asyncio.ensure_future(js.publish(QUEUE, BODY)))
                if len(pending) >= options.window:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for future in done:
                        future.result()
            await asyncio.gather(*pending)

        try:
            await one_at_a_time(50)  # warm-up
            leader = (await js.stream_info(QUEUE)).cluster
            one_s = await _timed(lambda: one_at_a_time(options.confirms))
            piped_s = await _timed(lambda: pipelined(options.confirms))
        finally:
            await js.delete_stream(QUEUE)
        version = str(client.connected_server_version).strip("<>").removeprefix("nats server v")
    finally:
        await client.close()
    return {
        "node": server,
        "queue_members": replicas,
        "queue_leader": leader.leader if leader is not None else server,
        "nats_server": version,
        "messages": options.confirms,
        "window": options.window,
        "one_at_a_time_msgs_per_s": round(options.confirms / one_s, 1),
        "pipelined_msgs_per_s": round(options.confirms / piped_s, 1),
    }


# -- roundtrips -----------------------------------------------------------------------------


def _split(total: int, parts: int) -> list[int]:
    """`total` shared as evenly as can be between `parts`."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def roundtrip_cpu(
    stack: ComposeStack,
    containers: list[Container],
    idle: dict[str, float],
    options: ClusterOptions,
) -> dict[str, Any]:
    """A fixed number of roundtrips at fixed concurrency, shared between the stack's gateways;
    CPU from before the first POST until the log holds every accepted one (and SETTLE_S)."""
    urls = stack.gateway_urls
    counts = _split(options.roundtrips, len(urls))
    connections = _split(options.concurrency, len(urls))
    prefix = f"bench-{uuid4().hex[:8]}"
    loads = [
        RoundtripLoad(url, f"{prefix}-{i}", concurrency=c, value=lambda _: VALUE)
        for i, (url, c) in enumerate(zip(urls, connections, strict=True))
    ]
    live = await stack.store()
    try:
        events_before = await events_length(live)
        before = sample(containers)
        started = time.monotonic()
        await asyncio.gather(*(load.run(count=n) for load, n in zip(loads, counts, strict=True)))
        load_s = time.monotonic() - started
        accepted = sum(load.accepted for load in loads)
        await wait_for_events(live, events_before + accepted, DRAIN_TIMEOUT_S)
        drained_s = time.monotonic() - started
        await asyncio.sleep(SETTLE_S)
        after = sample(containers)
    finally:
        await live.close()
    latencies = [a.seconds for load in loads for a in load.answers if a.status == 202]
    return {
        "roundtrips": options.roundtrips,
        "accepted": accepted,
        "concurrency": options.concurrency,
        "gateways": len(urls),
        "req_per_s": round(accepted / load_s, 1),
        "p50_ms": percentile_ms(latencies, 0.5),
        "p99_ms": percentile_ms(latencies, 0.99),
        "drained_after_s": round(drained_s, 2),
        **_cpu_figures(containers, before, after, idle, accepted, scale_ns=1e6, unit="ms"),
    }


# -- batches --------------------------------------------------------------------------------


async def batch_runs(
    stack: ComposeStack,
    containers: list[Container],
    idle: dict[str, float],
    options: ClusterOptions,
) -> dict[str, Any]:
    timeout = httpx.Timeout(BATCH_TIMEOUT_S + 120, connect=10)
    runs: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=timeout) as client:
        before = sample(containers)
        for _ in range(options.batch_runs):
            started = time.perf_counter()
            answer = await client.post(
                f"{stack.gateway_url}/api/batch", json={"size": options.items}
            )
            seconds = time.perf_counter() - started
            body: dict[str, Any] = answer.json()
            if answer.status_code != 200:
                print(f"bench: batch of {options.items} answered {answer.status_code}: {body}")
            runs.append(
                {
                    "status": str(body.get("status") or answer.status_code),
                    "seconds": round(seconds, 2),
                    "items_per_s": round(options.items / seconds, 1),
                }
            )
        after = sample(containers)
    items = options.items * len(runs)
    return {
        "items": options.items,
        "runs": runs,
        "items_per_s_median": round(statistics.median(r["items_per_s"] for r in runs), 1),
        **_cpu_figures(containers, before, after, idle, items, scale_ns=1e3, unit="us"),
    }


def _cpu_figures(
    containers: list[Container],
    before: CpuSample,
    after: CpuSample,
    idle: dict[str, float],
    units: int,
    scale_ns: float,
    unit: str,
) -> dict[str, Any]:
    groups = {c.id: c.group for c in containers}
    net = cpu_ns_per_unit(before, after, groups, units, idle)
    raw = cpu_ns_per_unit(before, after, groups, units)
    instances: dict[str, int] = {}
    for group in groups.values():
        instances[group] = instances.get(group, 0) + 1
    return {
        "seconds_measured": round(after.at - before.at, 2),
        f"cpu_{unit}_per_unit": {g: round(ns / scale_ns, 3) for g, ns in net.items()},
        f"cpu_{unit}_per_unit_with_idle": {g: round(ns / scale_ns, 3) for g, ns in raw.items()},
        "per_core_units_per_s": {
            g: round(one_instance_per_core(g, ns, instances[g]), 1) for g, ns in net.items()
        },
        "instances": instances,
    }


def one_instance_per_core(service: str, ns_per_unit: float, instances: int) -> float:
    """Units/s one instance of a service handles on one whole core, from its CPU per unit
    summed over its instances: of competing instances each unit is handled by one, so that
    sum is what a unit costs one instance; of a broadcast service each instance handles every
    unit, so each spends the sum shared by the instances."""
    return per_core(ns_per_unit / instances if service in BROADCAST else ns_per_unit)


# -- one stack, then the other --------------------------------------------------------------


async def _phase(name: str, figures: dict[str, Any], work: Awaitable[T]) -> T:
    print(f"bench: {name} ...", flush=True)
    figures.setdefault("load_average", {})[f"{name}_start"] = load_average()
    result = await work
    figures["load_average"][f"{name}_end"] = load_average()
    return result


async def measure_stack(
    stack: ComposeStack, options: ClusterOptions, backend: str
) -> dict[str, Any]:
    figures: dict[str, Any] = {"project": stack.project, "up_s": round(stack.up_s, 1)}
    containers = await project_containers(stack)
    figures["containers"] = {c.service: c.id[:12] for c in containers}
    figures["cgroup_file_example"] = str(containers[0].usage)
    # Warm-up: connections, queues, the first batch's code paths.
    for url in stack.gateway_urls:
        await RoundtripLoad(url, f"warm-{uuid4().hex[:6]}", concurrency=4).run(count=40)
    async with httpx.AsyncClient(timeout=httpx.Timeout(BATCH_TIMEOUT_S, connect=10)) as client:
        await client.post(f"{stack.gateway_url}/api/batch", json={"size": 100})

    async def idle_window() -> dict[str, float]:
        before = sample(containers)
        await asyncio.sleep(options.idle_s)
        return idle_rates(before, sample(containers))

    idle = await _phase("idle", figures, idle_window())
    groups: dict[str, float] = {}
    for c in containers:
        groups[c.group] = groups.get(c.group, 0.0) + idle[c.id]
    figures["idle_cpu_ms_per_s"] = {g: round(v / 1e6, 2) for g, v in sorted(groups.items())}
    confirms = bench_confirms if backend == "rabbit" else bench_nats_confirms
    figures["confirms"] = await _phase("confirms", figures, confirms(stack, options))
    address, port = "127.0.0.1", stack.gateway_port
    figures["frame_latency"] = await _phase(
        "websocket latency", figures, frame_latency(address, port, options.samples)
    )
    figures["roundtrip"] = await _phase(
        "roundtrip CPU", figures, roundtrip_cpu(stack, containers, idle, options)
    )
    figures["batch"] = await _phase("batch", figures, batch_runs(stack, containers, idle, options))
    return figures


NATS_URLS = {
    "single": "nats://nats:4222",
    "cluster": ",".join(f"nats://{server}:4222" for server in NATS_SERVERS),
}


def compose_stack(kind: str, backend: str) -> BenchCompose:
    """The compose stack of `kind` (single, cluster) on the backend: RabbitMQ as the files
    have it, or NATS (the `nats` profile, and every service pointed at its servers)."""
    stack: Any = "single" if kind == "single" else "cluster"
    if backend == "rabbit":
        return BenchCompose(stack=stack)
    return BenchCompose(stack=stack, broker_url=NATS_URLS[kind], profiles=("nats",))


async def bench_cluster(options: ClusterOptions, backend: str = "rabbit") -> dict[str, Any]:
    results: dict[str, Any] = {"backend": backend, "options": asdict(options)}
    for kind in STACKS:
        async with stack_up(compose_stack(kind, backend)) as stack:
            results[kind] = await measure_stack(stack, options, backend)
    print_comparison(results)
    return results


# -- the side-by-side table -----------------------------------------------------------------


def comparison_rows(results: dict[str, Any]) -> list[list[object]]:
    """[figure, single, cluster, cluster/single] for every figure both stacks have."""
    single, cluster = results["single"], results["cluster"]

    def row(label: str, pick: Callable[[dict[str, Any]], float]) -> list[object]:
        a, b = pick(single), pick(cluster)
        return [label, a, b, ratio_text(a, b)]

    rows = [
        row("confirms one at a time, msgs/s", lambda f: f["confirms"]["one_at_a_time_msgs_per_s"]),
        row(
            f"confirms pipelined (window {results['options']['window']}), msgs/s",
            lambda f: f["confirms"]["pipelined_msgs_per_s"],
        ),
        row("POST -> websocket frame p50, ms", lambda f: f["frame_latency"]["p50_ms"]),
        row("POST -> websocket frame p99, ms", lambda f: f["frame_latency"]["p99_ms"]),
        row("POST -> 202 p50, ms", lambda f: f["frame_latency"]["post_202_p50_ms"]),
        row("roundtrips under load, 202/s", lambda f: f["roundtrip"]["req_per_s"]),
        row(
            f"batch of {results['options']['items']:,}, items/s (median)",
            lambda f: f["batch"]["items_per_s_median"],
        ),
    ]
    for unit, phase, key in (
        ("ms per roundtrip", "roundtrip", "cpu_ms_per_unit"),
        ("us per batch item", "batch", "cpu_us_per_unit"),
    ):
        for service in (*SERVICES, BROKERS[results["backend"]], "redis"):
            rows.append(row(f"CPU {unit}, {service}", _cpu_of(phase, key, service)))
    return rows


def _cpu_of(phase: str, key: str, service: str) -> Callable[[dict[str, Any]], float]:
    def pick(figures: dict[str, Any]) -> float:
        value: float = figures[phase][key].get(service, float("nan"))
        return value

    return pick


def per_core_rows(figures: dict[str, Any]) -> list[list[object]]:
    """[service, CPU ms/roundtrip, roundtrips/s, CPU us/item, items/s]: the rates one instance
    gives on one core ("-" for a flow the service is not on)."""
    roundtrip, batch = figures["roundtrip"], figures["batch"]

    def rate(flow: dict[str, Any], path: tuple[str, ...], service: str) -> object:
        return flow["per_core_units_per_s"].get(service, float("nan")) if service in path else "-"

    return [
        [
            service,
            roundtrip["cpu_ms_per_unit"].get(service, float("nan")),
            rate(roundtrip, ROUNDTRIP_PATH, service),
            batch["cpu_us_per_unit"].get(service, float("nan")),
            rate(batch, BATCH_PATH, service),
        ]
        for service in SERVICES
    ]


def print_comparison(results: dict[str, Any]) -> None:
    print_table(
        f"single node vs three-node cluster ({BROKERS[results['backend']]}), same run",
        ["figure", "single", "cluster", "cluster / single"],
        comparison_rows(results),
        note="CPU: the service's containers' cgroup CPU, summed over its instances, less each "
        "container's idle rate; load averages are in the JSON",
    )
    for kind in STACKS:
        print_table(
            f"one instance on one core ({kind} stack): 1 / CPU per unit",
            ["service", "CPU ms/roundtrip", "roundtrips/s", "CPU us/item", "items/s"],
            per_core_rows(results[kind]),
            note="CPU summed over the service's instances; a websocket instance handles every "
            "roundtrip, so its rate is 1 / (that sum / instances)",
        )
