"""The batch flow end to end: POST /api/batch through the gateway, time, items/s and RSS.

Baseline in the same run: a 1,000-item batch, i.e. the fixed costs per batch
(request, BatchRequested, reply) against which the big batches' items/s read.
RSS deltas are against each service's idle RSS measured once after a warm-up
batch, before any measured batch: the strictest reading of "within about
50 MB of its idle RSS".
"""

import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from bench.cpu import cpu_ms_per, cpu_snapshot
from bench.event_log import events_length
from bench.memory import RssPeaks, rss_kib, sampling_rss
from bench.report import print_table
from msarch.testing.stack import Stack, pid_of

BASELINE_SIZE = 1_000
LARGE_SIZES = (100_000, 1_000_000)
WATCHED = ("batch", "store", "gateway")


@dataclass
class BatchRun:
    size: int
    status: str
    seconds: float
    items_per_s: float
    events_appended: int
    events_per_s: float
    rss: dict[str, dict[str, float]]
    cpu_us_per_item: dict[str, float]


async def run_batch(stack: Stack, client: httpx.AsyncClient, size: int, idle: RssPeaks) -> BatchRun:
    pids = {name: pid_of(stack.processes[name]) for name in WATCHED}
    live = stack.store()
    try:
        events_before = await events_length(live)
        cpu_before = cpu_snapshot(pids)
        async with sampling_rss(pids) as peaks:
            peaks.idle_kib = dict(idle.idle_kib)  # deltas against the idle RSS at start
            started = time.perf_counter()
            answer = await client.post(f"{stack.gateway_url}/api/batch", json={"size": size})
            seconds = time.perf_counter() - started
        appended = await events_length(live) - events_before
        cpu_us = {n: round(ms * 1000, 1) for n, ms in cpu_ms_per(cpu_before, pids, size).items()}
    finally:
        await live.close()
    body: dict[str, Any] = answer.json()
    status = str(body.get("status") or body.get("batch_status") or answer.status_code)
    if answer.status_code != 200:
        print(f"bench: batch of {size} answered {answer.status_code}: {body}")
    return BatchRun(
        size=size,
        status=status,
        seconds=round(seconds, 3),
        items_per_s=round(size / seconds, 1),
        events_appended=appended,
        events_per_s=round(appended / seconds, 1),
        rss=peaks.as_dict(),
        cpu_us_per_item=cpu_us,
    )


async def bench_batch(stack: Stack, backend: str, items: int, large: bool) -> dict[str, Any]:
    sizes = [BASELINE_SIZE, items, *(LARGE_SIZES if large else ())]
    sizes = sorted(set(sizes))
    timeout = httpx.Timeout(stack.settings.batch_timeout_s + 120, connect=5)
    async with httpx.AsyncClient(timeout=timeout) as client:
        await client.post(f"{stack.gateway_url}/api/batch", json={"size": 10})  # warm-up
        idle = RssPeaks(idle_kib={name: rss_kib(pid_of(stack.processes[name])) for name in WATCHED})
        runs: list[BatchRun] = []
        for size in sizes:
            print(f"bench: {backend}: batch of {size:,} items ...", flush=True)
            runs.append(await run_batch(stack, client, size, idle))
    baseline = runs[0]
    print_table(
        f"batch flow through the gateway ({backend})",
        ["items", "status", "seconds", "items/s", "vs baseline", "events/s",
         "batch dRSS MiB", "store dRSS MiB", "gateway dRSS MiB",
         "CPU us/item batch", "CPU us/item store"],
        [
            [
                r.size, r.status, r.seconds, r.items_per_s,
                f"{r.items_per_s / baseline.items_per_s:.2f}x",
                r.events_per_s,
                r.rss["batch"]["delta_mib"], r.rss["store"]["delta_mib"],
                r.rss["gateway"]["delta_mib"],
                r.cpu_us_per_item["batch"], r.cpu_us_per_item["store"],
            ]
            for r in runs
        ],
        note=f"baseline: the {BASELINE_SIZE:,}-item batch (fixed costs); dRSS = peak sampled "
        "every 50 ms minus idle RSS after a warm-up batch "
        f"(idle MiB: {', '.join(f'{n} {v / 1024:.0f}' for n, v in idle.idle_kib.items())})",
    )  # fmt: skip
    return {
        "baseline": f"{BASELINE_SIZE}-item batch",
        "idle_rss_mib": {n: round(v / 1024, 1) for n, v in idle.idle_kib.items()},
        "runs": [asdict(r) for r in runs],
    }
