"""The event log's ceiling: how fast one Redis primary appends to the one events stream.

Every roundtrip and every batch item ends in an XADD to `{namespace}msarch:events`, a single
Redis Stream on a single primary, whatever the number of brokers and service instances. This
measures Store.store_key_value (the real Lua script: the msg:{id} marker, kv:{key} and the
XADD) from N concurrent writers, for a fixed time each, against a Redis of the run's own with
AOF fsync always (as compose runs it):

- alone: a primary with no replica, acknowledged on its word (the baseline);
- WAIT 1: a primary with one replica, each write sent with WAIT 1 (MSARCH_REDIS_WAIT_REPLICAS=1,
  what the services do behind Sentinel).

For each: events/s, latency per write, the Redis servers' CPU per event (INFO cpu:
used_cpu_sys + used_cpu_user, primary and replica apart) and this client's own CPU per event.
On a 2-core machine the one Python client tops out before Redis does; so the same script is
also run by redis-benchmark (a C client, ~30 us of CPU per request) with many connections:
what the primary itself can append. redis-benchmark sends one command at a time per
connection and cannot add WAIT after each: its runs are the primary alone and the primary
feeding a replica (no WAIT). No broker, no Docker.
"""

import asyncio
import re
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.report import print_table, ratio_text
from bench.session import NAMESPACE_PREFIX
from msarch.messages import KeyValue
from msarch.settings import Settings
from msarch.storage import Store, scripts
from msarch.storage.keys import Keys
from msarch.testing.isolation import new_namespace
from msarch.testing.load import percentile_ms
from msarch.testing.servers import PrivateRedis, ReplicatedRedis

WRITERS = (1, 16, 64)
VALUE = "v" * 100
WARM_UP = 200
MODES = ("alone", "wait_1")
C_CONNECTIONS = (64, 256)
C_REQUESTS = 50_000
C_KEYSPACE = 1_000_000_000
"""redis-benchmark's random key numbers: a repeated msg:{id} (a no-op) is rare."""
C_MODES = ("alone", "replica")


async def redis_cpu_s(server: PrivateRedis) -> float:
    """CPU seconds the server has used so far (user + system)."""
    cpu = await server.info("cpu")
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


async def _servers_cpu_s(servers: list[PrivateRedis]) -> list[float]:
    return [await redis_cpu_s(server) for server in servers]


def _cpu_figures(servers_s: list[float], events: int, elapsed: float) -> dict[str, float | None]:
    """Primary (and replica) CPU per event, and the primary's share of one core."""
    per_event = [round(s * 1e6 / max(events, 1), 1) for s in servers_s]
    return {
        "primary_cpu_us_per_event": per_event[0],
        "replica_cpu_us_per_event": per_event[1] if len(per_event) > 1 else None,
        "primary_cpu_share": round(servers_s[0] / elapsed, 2),
        "primary_ceiling_events_per_s": round(1e6 / per_event[0], 0) if per_event[0] else None,
    }


async def _cell(
    store: Store, servers: list[PrivateRedis], writers: int, seconds: float, tag: str
) -> dict[str, Any]:
    """`writers` tasks, each writing as soon as its previous write came back, for `seconds`."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def writer(number: int) -> None:
        index = 0
        while time.monotonic() < deadline:
            kv = KeyValue(key=f"{tag}-{number}-{index}", value=VALUE)
            started = time.perf_counter()
            await store.store_key_value(kv)
            latencies.append(time.perf_counter() - started)
            index += 1

    length_before = await store.events.length()
    server_before, client_before = await _servers_cpu_s(servers), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(writers)))
    elapsed = time.perf_counter() - started
    server_s = [a - b for a, b in zip(await _servers_cpu_s(servers), server_before, strict=True)]
    client_s = time.process_time() - client_before
    events = await store.events.length() - length_before
    if events != len(latencies):
        raise AssertionError(f"{len(latencies)} writes appended {events} events ({tag})")
    return {
        "writers": writers,
        "events": events,
        "seconds": round(elapsed, 2),
        "events_per_s": round(events / elapsed, 1),
        "p50_ms": percentile_ms(latencies, 0.5),
        "p99_ms": percentile_ms(latencies, 0.99),
        **_cpu_figures(server_s, events, elapsed),
        "client_cpu_us_per_event": round(client_s * 1e6 / max(events, 1), 1),
        "client_cpu_share": round(client_s / elapsed, 2),
    }


RPS = re.compile(r"([\d.]+) requests per second(?:, p50=([\d.]+) msec)?")


def parse_redis_benchmark(output: str) -> tuple[float, float | None]:
    """(requests/s, p50 ms or None) from redis-benchmark -q's last line."""
    found = RPS.findall(output.replace("\r", "\n"))
    if not found:
        raise ValueError(f"no 'requests per second' in redis-benchmark's output: {output[-500:]!r}")
    rps, p50 = found[-1]
    return float(rps), float(p50) if p50 else None


def payload() -> str:
    """A KeyValue's JSON as the store writes it into the event (the `payload` field)."""
    return KeyValue(key="k" * 12, value=VALUE).model_dump_json()


async def _c_cell(servers: list[PrivateRedis], connections: int, namespace: str) -> dict[str, Any]:
    """The real store_key_value script by EVALSHA from redis-benchmark, random key numbers."""
    primary = servers[0]
    keys = Keys(namespace)
    async with primary_client(primary) as client:
        sha = await client.script_load(scripts.STORE_KEY_VALUE)
        length_before = int(await client.xlen(keys.events))
    command = [
        "redis-benchmark", "-h", "127.0.0.1", "-p", str(primary.port), "-q",
        "-c", str(connections), "-n", str(C_REQUESTS), "-r", str(C_KEYSPACE),
        "EVALSHA", sha, "3", keys.kv("__rand_int__"), keys.message("__rand_int__"), keys.events,
        VALUE, "00000000-0000-4000-8000-000000000000", "", "2026-12-01T00:00:00+00:00",
        payload(), "604800",
    ]  # fmt: skip
    servers_before = await _servers_cpu_s(servers)
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    elapsed = time.perf_counter() - started
    text = output.decode(errors="replace")
    if process.returncode != 0 or "ERR" in text:
        raise RuntimeError(f"redis-benchmark failed ({process.returncode}): {text[-1000:]}")
    servers_s = [a - b for a, b in zip(await _servers_cpu_s(servers), servers_before, strict=True)]
    async with primary_client(primary) as client:
        events = int(await client.xlen(keys.events)) - length_before
    rps, p50 = parse_redis_benchmark(text)
    return {
        "connections": connections,
        "requests": C_REQUESTS,
        "events": events,
        "seconds": round(elapsed, 2),
        "events_per_s": round(events / elapsed, 1),
        "redis_benchmark_rps": rps,
        "p50_ms": p50,
        **_cpu_figures(servers_s, events, elapsed),
    }


@asynccontextmanager
async def primary_client(server: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=server.port, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


def _store(url: str, replicas: int) -> Store:
    settings = Settings(
        redis_url=url,
        redis_sentinels=None,
        redis_wait_replicas=replicas,
        namespace=new_namespace(NAMESPACE_PREFIX),
    )
    return Store.from_settings(settings, max_connections=max(WRITERS) + 8)


async def bench_log_ceiling(seconds: float = 5.0) -> dict[str, Any]:
    cells: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    c_cells: dict[str, list[dict[str, Any]]] = {mode: [] for mode in C_MODES}
    with tempfile.TemporaryDirectory(prefix="msarch-bench-log-") as data_dir:
        alone = PrivateRedis(Path(data_dir) / "alone")
        await alone.start()
        try:
            async with ReplicatedRedis(Path(data_dir) / "replicated", sentinels=0) as replicated:
                pair = [replicated.primary, replicated.replica]
                setups = {
                    "alone": (_store(alone.url, 0), [alone]),
                    "wait_1": (_store(replicated.primary.url, 1), pair),
                }
                try:
                    for store, _ in setups.values():
                        for index in range(WARM_UP):
                            await store.store_key_value(KeyValue(key=f"warm-{index}", value=VALUE))
                    # Writer counts in turn, the two modes back to back at each: both see
                    # about the same machine.
                    for writers in WRITERS:
                        for mode, (store, servers) in setups.items():
                            print(f"bench: log ceiling: {mode}, {writers} writers ...", flush=True)
                            tag = f"{mode}-{writers}"
                            cells[mode].append(await _cell(store, servers, writers, seconds, tag))
                    namespace = new_namespace(NAMESPACE_PREFIX)
                    for connections in C_CONNECTIONS:
                        for mode, servers in (("alone", [alone]), ("replica", pair)):
                            print(
                                f"bench: log ceiling: redis-benchmark, {mode}, "
                                f"{connections} connections ...",
                                flush=True,
                            )
                            c_cells[mode].append(await _c_cell(servers, connections, namespace))
                finally:
                    for store, _ in setups.values():
                        await store.close()
        finally:
            await alone.stop()
    figures: dict[str, Any] = {
        "seconds_per_cell": seconds,
        "store_key_value": cells,
        "redis_benchmark": c_cells,
        "max_events_per_s": {
            "python_alone": max(c["events_per_s"] for c in cells["alone"]),
            "python_wait_1": max(c["events_per_s"] for c in cells["wait_1"]),
            "c_client_alone": max(c["events_per_s"] for c in c_cells["alone"]),
            "c_client_replica": max(c["events_per_s"] for c in c_cells["replica"]),
        },
    }
    print_ceiling(figures)
    return figures


def print_ceiling(figures: dict[str, Any]) -> None:
    cells, c_cells = figures["store_key_value"], figures["redis_benchmark"]
    print_table(
        "the event log's ceiling: Store.store_key_value from N writers in one Python process, "
        f"{figures['seconds_per_cell']:g} s each",
        ["writers", "mode", "events/s", "vs alone", "p50 ms", "p99 ms",
         "primary CPU us/event", "replica CPU us/event", "primary CPU share",
         "client CPU us/event", "client CPU share"],
        [
            [c["writers"], mode, c["events_per_s"],
             ratio_text(base["events_per_s"], c["events_per_s"]), c["p50_ms"], c["p99_ms"],
             c["primary_cpu_us_per_event"], c["replica_cpu_us_per_event"] or "-",
             c["primary_cpu_share"], c["client_cpu_us_per_event"], c["client_cpu_share"]]
            for base, waited in zip(cells["alone"], cells["wait_1"], strict=True)
            for mode, c in (("alone", base), ("WAIT 1", waited))
        ],
        note="own Redis on loopback, AOF fsync always; CPU from INFO cpu (Redis) and "
        "process_time (client); CPU share = CPU seconds / wall seconds (1.0 = one core)",
    )  # fmt: skip
    print_table(
        f"the same script from redis-benchmark (C client), {C_REQUESTS:,} EVALSHA per cell",
        ["connections", "mode", "events/s", "vs alone", "p50 ms", "primary CPU us/event",
         "replica CPU us/event", "primary CPU share", "primary ceiling events/s"],
        [
            [c["connections"], mode, c["events_per_s"],
             ratio_text(base["events_per_s"], c["events_per_s"]), c["p50_ms"] or "-",
             c["primary_cpu_us_per_event"], c["replica_cpu_us_per_event"] or "-",
             c["primary_cpu_share"], c["primary_ceiling_events_per_s"] or "-"]
            for base, fed in zip(c_cells["alone"], c_cells["replica"], strict=True)
            for mode, c in (("alone", base), ("feeding a replica", fed))
        ],
        note="primary ceiling = 1 / primary CPU per event: the rate on one whole core, "
        "fsync waits aside; no WAIT here (redis-benchmark cannot send one after each write)",
    )  # fmt: skip
