"""What tracing costs (issue 16, item 4): the services' CPU per roundtrip and per batch item
with MSARCH_TRACE_SAMPLE at 0 (the baseline: no span is recorded, only the traceparent header
travels), at the default (Settings.trace_sample) and at 1 (every request traced).

Each sampling ratio gets a private stack of its own, all three up at once, and the rounds
alternate between them (each round in a different order), so a machine that gets busier weighs
on every ratio alike; `--repeat` rounds, the median round's figures compared. A round is a
fixed number of roundtrips through the gateway at fixed concurrency, CPU counted until the
websocket service has consumed every accepted one, then one batch through the gateway. CPU is
each service process's own time (bench.cpu), so other load on the machine barely moves it.
"""

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar
from uuid import uuid4

import httpx

from bench.batch import WATCHED
from bench.cpu import cpu_snapshot
from bench.event_log import events_length, wait_for_events
from bench.repeats import median_run
from bench.report import print_table
from bench.roundtrip import DRAIN_TIMEOUT_S, SERVICES_ON_PATH, VALUE, reached
from bench.session import bench_stack
from msarch.settings import Settings
from msarch.testing.load import RoundtripLoad, metric
from msarch.testing.stack import Stack, pid_of
from msarch.tracing import TRACEPARENT

OVERHEAD_LIMIT_PCT = 10.0
"""Issue 16's bar: tracing at the default sampling costs less than this much more CPU."""
DEFAULT_SAMPLE: float = Settings.model_fields["trace_sample"].default
SAMPLES = tuple(sorted({0.0, DEFAULT_SAMPLE, 1.0}))
"""The ratios compared, the baseline (0) first."""
WARM_UP = (4, 200, 1000)
"""Connections and roundtrips, then batch items, each stack gets before any measured round
(a fresh stack's first roundtrips and batch cost more CPU than the later ones)."""

T = TypeVar("T")


def mode_of(sample: float) -> str:
    """A ratio's name in the figures: "off" for 0, else the ratio ("0.1", "1.0")."""
    return "off" if sample == 0 else str(sample)


def round_order(items: Sequence[T], number: int) -> list[T]:
    """`items` rotated by `number`: over len(items) rounds each takes every place once."""
    shift = number % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


def overhead_pct(baseline: float, value: float) -> float | None:
    """How much more `value` is than `baseline`, in %; None when either is missing or the
    baseline is not above 0."""
    if not (math.isfinite(baseline) and math.isfinite(value)) or baseline <= 0:
        return None
    return (value - baseline) / baseline * 100


def overhead_text(pct: float | None) -> str:
    """ "+2.4 %", "-0.8 %", "+32 %" (no decimal from 10 % on); "n/a" without a figure."""
    if pct is None:
        return "n/a"
    return f"{pct:+.0f} %" if abs(pct) >= 10 else f"{pct:+.1f} %"


def comparison_line(what: str, by_mode: Mapping[str, float], unit: str = "µs") -> str:
    """One figure of every mode, the first (the baseline) bare, each other with its overhead:
    "roundtrip CPU/req total: off 2,950 µs | 0.1 3,020 µs (+2.4 %) | 1.0 3,900 µs (+32 %)"."""
    (base_mode, base), *others = by_mode.items()
    cells = [f"{base_mode} {base:,.0f} {unit}"]
    cells += [
        f"{mode} {value:,.0f} {unit} ({overhead_text(overhead_pct(base, value))})"
        for mode, value in others
    ]
    return f"{what}: {' | '.join(cells)}"


def verdict(overheads: Mapping[str, float | None], limit_pct: float = OVERHEAD_LIMIT_PCT) -> bool:
    """Every overhead measured and under `limit_pct`."""
    return all(pct is not None and pct < limit_pct for pct in overheads.values())


def verdict_line(
    sample: float, overheads: Mapping[str, float | None], limit_pct: float = OVERHEAD_LIMIT_PCT
) -> str:
    """Whether the default ratio stays under the limit, with each overhead that decides it."""
    met = verdict(overheads, limit_pct)
    each = ", ".join(f"{what} {overhead_text(pct)}" for what, pct in overheads.items())
    under = "stays under" if met else "does NOT stay under"
    return f"tracing at MSARCH_TRACE_SAMPLE={sample} (the default) {under} +{limit_pct:g} %: {each}"


@dataclass
class RoundtripRun:
    roundtrips: int
    req_per_s: float
    cpu_us_per_roundtrip: dict[str, float]
    """Per service on the path, and "total"."""


@dataclass
class BatchItemRun:
    size: int
    seconds: float
    items_per_s: float
    traced: bool
    """The gateway's answer named a sampled trace: a batch is traced whole or not at all."""
    cpu_us_per_item: dict[str, float]
    """Per service bench.batch watches, and "total"."""


def traced(traceparent: str | None) -> bool:
    """A W3C traceparent ("00-<trace id>-<span id>-<flags>") with the sampled flag set."""
    parts = (traceparent or "").split("-")
    if len(parts) != 4 or len(parts[3]) != 2:
        return False
    try:
        return bool(int(parts[3], 16) & 0x01)
    except ValueError:
        return False


def expected_batch_overhead_pct(sample: float, traced_pct: float | None) -> float | None:
    """A batch's expected overhead at `sample`: sampling decides once per batch, where its
    trace starts, so a share `sample` of batches costs what a traced one does (`traced_pct`,
    measured at 1) and the rest what one at 0 does (the same code: no span recorded)."""
    return None if traced_pct is None else sample * traced_pct


def with_total(per_service: Mapping[str, float]) -> dict[str, float]:
    return {**per_service, "total": round(sum(per_service.values()), 1)}


async def _forwarded(stack: Stack) -> int:
    """Messages the websocket service has consumed (a forwarded roundtrip is one)."""
    url = stack.settings.url_of("websocket")
    return int(await metric(url, "msarch_messages_consumed_total", service="websocket"))


async def roundtrip_run(stack: Stack, count: int, concurrency: int) -> RoundtripRun:
    """`count` roundtrips through the gateway; CPU from before the first POST until the store
    has logged, and the websocket service consumed, every accepted one."""
    pids = {name: pid_of(stack.processes[name]) for name in SERVICES_ON_PATH}
    live = stack.store()
    try:
        events_before, forwarded_before = await events_length(live), await _forwarded(stack)
        before = cpu_snapshot(pids)
        load = RoundtripLoad(
            stack.gateway_url, f"bench-trace-{uuid4().hex[:8]}", concurrency, value=lambda _: VALUE
        )
        await load.run(count=count)
        # The event log first: it is read from Redis, so waiting on it costs no service CPU.
        await wait_for_events(live, events_before + load.accepted, DRAIN_TIMEOUT_S)
        target, what = forwarded_before + load.accepted, "the websocket service's messages"
        await reached(lambda: _forwarded(stack), target, DRAIN_TIMEOUT_S, what)
        after = cpu_snapshot(pids)
    finally:
        await live.close()
    if set(load.statuses) != {202}:
        raise RuntimeError(f"tracing: roundtrips answered {dict(load.statuses)}, not only 202")
    per = {name: round((after[name] - before[name]) * 1e6 / load.accepted, 1) for name in pids}
    return RoundtripRun(load.accepted, round(load.per_s, 1), with_total(per))


async def batch_run(stack: Stack, client: httpx.AsyncClient, size: int) -> BatchItemRun:
    """One batch of `size` items through the gateway; CPU from before the POST until its
    answer (Done: every item stored), and whether its trace was recorded."""
    pids = {name: pid_of(stack.processes[name]) for name in WATCHED}
    before = cpu_snapshot(pids)
    started = time.perf_counter()
    answer = await client.post(f"{stack.gateway_url}/api/batch", json={"size": size})
    seconds = time.perf_counter() - started
    after = cpu_snapshot(pids)
    if answer.status_code != 200:
        raise RuntimeError(
            f"tracing: a batch of {size:,} items answered {answer.status_code}: {answer.text}"
        )
    per = {name: round((after[name] - before[name]) * 1e6 / size, 1) for name in pids}
    return BatchItemRun(
        size,
        round(seconds, 3),
        round(size / seconds, 1),
        traced(answer.headers.get(TRACEPARENT)),
        with_total(per),
    )


@dataclass
class Mode:
    """One sampling ratio: its stack and every round measured on it."""

    sample: float
    stack: Stack
    client: httpx.AsyncClient
    roundtrips: list[RoundtripRun] = field(default_factory=list)
    batches: list[BatchItemRun] = field(default_factory=list)

    @property
    def name(self) -> str:
        return mode_of(self.sample)


def _total_per_roundtrip(run: RoundtripRun) -> float:
    return run.cpu_us_per_roundtrip["total"]


def _total_per_item(run: BatchItemRun) -> float:
    return run.cpu_us_per_item["total"]


async def bench_tracing(
    backend: str, roundtrips: int, concurrency: int, items: int, repeat: int = 3
) -> dict[str, Any]:
    """Every sampling ratio's stack up at once, warmed up, then `repeat` rounds of
    `roundtrips` roundtrips and one `items`-item batch on each, in a rotating order."""
    async with AsyncExitStack() as stacks:
        modes: list[Mode] = []
        for sample in SAMPLES:
            print(
                f"bench: {backend}: tracing: stack at MSARCH_TRACE_SAMPLE={sample} ...", flush=True
            )
            stack = await stacks.enter_async_context(bench_stack(backend, trace_sample=sample))
            timeout = httpx.Timeout(stack.settings.batch_timeout_s + 120, connect=5)
            client = await stacks.enter_async_context(httpx.AsyncClient(timeout=timeout))
            modes.append(Mode(sample, stack, client))
        connections, count, size = WARM_UP
        for mode in modes:
            await roundtrip_run(mode.stack, count, connections)
            await batch_run(mode.stack, mode.client, min(size, items))
        for number in range(repeat):
            print(
                f"bench: {backend}: tracing: round {number + 1}/{repeat}, {roundtrips:,} "
                f"roundtrips and a {items:,}-item batch per sampling ratio ...",
                flush=True,
            )
            for mode in round_order(modes, number):
                mode.roundtrips.append(await roundtrip_run(mode.stack, roundtrips, concurrency))
                mode.batches.append(await batch_run(mode.stack, mode.client, items))
    figures = _figures(modes, roundtrips, concurrency, items, repeat)
    _print(backend, figures)
    return figures


def _figures(
    modes: list[Mode], roundtrips: int, concurrency: int, items: int, repeat: int
) -> dict[str, Any]:
    by_mode: dict[str, Any] = {
        mode.name: {
            "trace_sample": mode.sample,
            "roundtrip": asdict(median_run(mode.roundtrips, _total_per_roundtrip)),
            "batch": asdict(median_run(mode.batches, _total_per_item)),
            "batches_traced": sum(run.traced for run in mode.batches),
            "roundtrip_runs": [asdict(r) for r in mode.roundtrips],
            "batch_runs": [asdict(r) for r in mode.batches],
        }
        for mode in modes
    }
    off = _totals(by_mode[mode_of(0.0)])
    overheads = {
        name: {kind: _rounded(overhead_pct(off[kind], total)) for kind, total in _totals(f).items()}
        for name, f in by_mode.items()
        if name != mode_of(0.0)
    }
    default = {
        "roundtrip": overheads[mode_of(DEFAULT_SAMPLE)]["roundtrip"],
        "batch": _rounded(
            expected_batch_overhead_pct(DEFAULT_SAMPLE, overheads[mode_of(1.0)]["batch"])
        ),
    }
    return {
        "roundtrips": roundtrips,
        "concurrency": concurrency,
        "items": items,
        "repeat": repeat,
        "default_sample": DEFAULT_SAMPLE,
        "limit_pct": OVERHEAD_LIMIT_PCT,
        "modes": by_mode,
        "overhead_pct": overheads,
        # Measured for roundtrips; for batches the expectation (expected_batch_overhead_pct).
        "default_overhead_pct": default,
        "default_under_limit": verdict(default),
        # The spread of the baseline's rounds: an overhead smaller than it is noise.
        "off_spread_pct": {
            "roundtrip": _spread_pct([_total_per_roundtrip(r) for r in _off(modes).roundtrips]),
            "batch": _spread_pct([_total_per_item(r) for r in _off(modes).batches]),
        },
    }


def _totals(mode: dict[str, Any]) -> dict[str, float]:
    """A mode's median CPU in total: µs per roundtrip and µs per batch item."""
    return {
        "roundtrip": mode["roundtrip"]["cpu_us_per_roundtrip"]["total"],
        "batch": mode["batch"]["cpu_us_per_item"]["total"],
    }


def _off(modes: list[Mode]) -> Mode:
    return next(mode for mode in modes if mode.sample == 0)


def _rounded(pct: float | None) -> float | None:
    return None if pct is None else round(pct, 1)


def _spread_pct(values: list[float]) -> float | None:
    """(max - min) / median of a mode's rounds, in %; None for a single round."""
    if len(values) < 2 or statistics.median(values) <= 0:
        return None
    return round((max(values) - min(values)) / statistics.median(values) * 100, 1)


def comparison_lines(figures: dict[str, Any]) -> list[str]:
    """Every CPU figure of every mode beside the baseline's, per service and in total."""
    modes: dict[str, Any] = figures["modes"]
    first = next(iter(modes.values()))
    lines = [
        comparison_line(
            f"roundtrip CPU/req {service}",
            {m: f["roundtrip"]["cpu_us_per_roundtrip"][service] for m, f in modes.items()},
        )
        for service in first["roundtrip"]["cpu_us_per_roundtrip"]
    ]
    lines += [
        comparison_line(
            f"batch CPU/item {service}",
            {m: f["batch"]["cpu_us_per_item"][service] for m, f in modes.items()},
        )
        for service in first["batch"]["cpu_us_per_item"]
    ]
    return lines


def _print(backend: str, figures: dict[str, Any]) -> None:
    modes: dict[str, Any] = figures["modes"]
    rows = []
    for name, mode in modes.items():
        rt, batch = mode["roundtrip"], mode["batch"]
        overhead = figures["overhead_pct"].get(name, {})
        rows.append(
            [name, rt["req_per_s"], *rt["cpu_us_per_roundtrip"].values(),
             overhead_text(overhead.get("roundtrip")) if overhead else "baseline",
             batch["items_per_s"], *batch["cpu_us_per_item"].values(),
             overhead_text(overhead.get("batch")) if overhead else "baseline",
             f"{mode['batches_traced']}/{len(mode['batch_runs'])}"]
        )  # fmt: skip
    first = next(iter(modes.values()))
    services = list(first["roundtrip"]["cpu_us_per_roundtrip"])
    batch_services = list(first["batch"]["cpu_us_per_item"])
    spread = figures["off_spread_pct"]
    print_table(
        f"tracing: CPU per roundtrip and per batch item by MSARCH_TRACE_SAMPLE ({backend}, "
        f"medians of {figures['repeat']})",
        ["trace sample", "202/s", *(f"µs/req {s}" for s in services), "vs off",
         "items/s", *(f"µs/item {s}" for s in batch_services), "vs off",
         "batches traced"],
        rows,
        note=f"{figures['roundtrips']:,} roundtrips at {figures['concurrency']} connections, "
        f"CPU until the websocket service consumed the last; one {figures['items']:,}-item "
        "batch; off = sample 0 (no span recorded, traceparent still sent), the baseline of "
        "the same run, its rounds spread "
        f"{_spread_text(spread['roundtrip'])} (roundtrip) and {_spread_text(spread['batch'])} "
        "(batch)",
    )  # fmt: skip
    for line in comparison_lines(figures):
        print(line)
    print(batch_expectation_line(figures))
    print(verdict_line(figures["default_sample"], figures["default_overhead_pct"],
                       figures["limit_pct"]), flush=True)  # fmt: skip


def batch_expectation_line(figures: dict[str, Any]) -> str:
    """Why a batch's overhead at the default is computed rather than read off one batch."""
    sample, mode = figures["default_sample"], figures["modes"][mode_of(figures["default_sample"])]
    expected = overhead_text(figures["default_overhead_pct"]["batch"])
    traced_pct = overhead_text(figures["overhead_pct"][mode_of(1.0)]["batch"])
    return (
        f"batch CPU/item total at {sample}: a batch is traced whole or not at all (decided "
        f"once, at the gateway), so expected {expected} = {sample} x the {traced_pct} of a "
        "traced batch "
        f"({mode['batches_traced']} of this run's {len(mode['batch_runs'])} at {sample} traced)"
    )


def _spread_text(pct: float | None) -> str:
    return "n/a" if pct is None else f"{pct:g} %"
