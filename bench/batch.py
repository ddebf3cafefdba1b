"""The batch flow end to end: POST /api/batch through the gateway, time, items/s and RSS.

Baselines in the same run: the raw client library's end to end with as many messages
(bench.baselines.batch), run right after each msarch batch of that size; and a 1,000-item
batch, i.e. the fixed costs per batch (request, BatchRequested, reply) against which the big
batches' items/s read.
RSS deltas are against each service's idle RSS measured once after a warm-up
batch, before any measured batch: the strictest reading of "within about
50 MB of its idle RSS".
"""

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from bench.baselines.batch import LIBRARIES, RawBatchRun
from bench.cpu import cpu_ms_per, cpu_snapshot
from bench.event_log import events_length
from bench.memory import RssPeaks, rss_kib, sampling_rss
from bench.repeats import median_run
from bench.report import print_table, ratio_text
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


BatchBaseline = Callable[[int], Awaitable[RawBatchRun]]
"""Runs the raw baseline once with that many messages (bench.baselines.batch.raw_batch)."""


def batch_plan(items: int, large: bool, repeat: int) -> list[tuple[int, int]]:
    """(size, runs) in size order: `items` runs `repeat` times, the others once."""
    sizes = sorted({BASELINE_SIZE, items, *(LARGE_SIZES if large else ())})
    return [(size, repeat if size == items else 1) for size in sizes]


async def bench_batch(
    stack: Stack,
    backend: str,
    items: int,
    large: bool,
    repeat: int = 1,
    baseline: BatchBaseline | None = None,
) -> dict[str, Any]:
    """Each batch size through the gateway, each run followed by the raw baseline's run of
    the same size (when given); `items` is run `repeat` times and its medians compared."""
    timeout = httpx.Timeout(stack.settings.batch_timeout_s + 120, connect=5)
    async with httpx.AsyncClient(timeout=timeout) as client:
        await client.post(f"{stack.gateway_url}/api/batch", json={"size": 10})  # warm-up
        idle = RssPeaks(idle_kib={name: rss_kib(pid_of(stack.processes[name])) for name in WATCHED})
        runs: list[BatchRun] = []
        raw_runs: list[RawBatchRun] = []
        for size, times in batch_plan(items, large, repeat):
            for number in range(1, times + 1):
                of = f" ({number}/{times})" if times > 1 else ""
                print(f"bench: {backend}: batch of {size:,} items{of} ...", flush=True)
                runs.append(await run_batch(stack, client, size, idle))
                if baseline is not None:
                    raw_runs.append(await baseline(size))
    figures: dict[str, Any] = {
        "baseline": f"{BASELINE_SIZE}-item batch",
        "idle_rss_mib": {n: round(v / 1024, 1) for n, v in idle.idle_kib.items()},
        "items": items,
        "repeat": repeat,
        "items_per_s_median": _median_rate(runs, items),
        "runs": [asdict(r) for r in runs],
    }
    if baseline is not None:
        figures["raw"] = {
            "name": LIBRARIES[backend],
            "items_per_s_median": _median_rate(raw_runs, items),
            "runs": [asdict(r) for r in raw_runs],
        }
    _print_runs(backend, runs, raw_runs, idle)
    return figures


def _median_rate(runs: Sequence[BatchRun | RawBatchRun], size: int) -> float:
    return median_run([r for r in runs if r.size == size], lambda r: r.items_per_s).items_per_s


def _print_runs(
    backend: str, runs: list[BatchRun], raw_runs: list[RawBatchRun], idle: RssPeaks
) -> None:
    fixed = runs[0]  # the smallest batch: BASELINE_SIZE unless --items is smaller
    headers = ["items", "status", "seconds", "items/s", f"vs {fixed.size:,}-item", "events/s",
               "batch dRSS MiB", "store dRSS MiB", "gateway dRSS MiB",
               "CPU us/item batch", "CPU us/item store"]  # fmt: skip
    rows: list[list[object]] = [
        [r.size, r.status, r.seconds, r.items_per_s, ratio_text(fixed.items_per_s, r.items_per_s),
         r.events_per_s, r.rss["batch"]["delta_mib"], r.rss["store"]["delta_mib"],
         r.rss["gateway"]["delta_mib"], r.cpu_us_per_item["batch"], r.cpu_us_per_item["store"]]
        for r in runs
    ]  # fmt: skip
    idle_mib = ", ".join(f"{n} {v / 1024:.0f}" for n, v in idle.idle_kib.items())
    note = (
        "dRSS = peak sampled every 50 ms minus idle RSS after a warm-up batch "
        f"(idle MiB: {idle_mib})"
    )
    if raw_runs:
        name = LIBRARIES[backend]
        headers += [f"{name} items/s", "msarch/raw", "raw CPU us/item"]
        for row, msarch, raw in zip(rows, runs, raw_runs, strict=True):
            cpu = " + ".join(f"{v:g}" for v in raw.cpu_us_per_item.values())
            row += [raw.items_per_s, ratio_text(raw.items_per_s, msarch.items_per_s), cpu]
        note += (
            f"; each run is followed by {name}'s run of the same size (raw CPU us/item: "
            "publisher + consumer; NATS: the one process)"
        )
    print_table(f"batch flow through the gateway ({backend})", headers, rows, note=note)
