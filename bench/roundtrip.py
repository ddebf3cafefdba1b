"""Roundtrip: req/s and latency of 202 answers through the gateway, against the same load
sent straight to the roundtrip service (what the gateway costs), then the end-to-end latency
POST -> websocket frame, and how the store and the websocket service kept up meanwhile.

The raw baseline (bench.baselines.chain, when given) is measured the same way in the same
run: each repetition runs msarch's load, then the raw chain's, then msarch's frame latency,
then the raw chain's, so a machine that gets busier weighs on both alike. The medians of
the repetitions are the figures compared.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import uuid4

import websockets

from bench.cpu import cpu_ms_per, cpu_snapshot
from bench.event_log import events_length, wait_for_events
from bench.repeats import median_run
from bench.report import print_table
from msarch.storage import Store
from msarch.testing.http_client import KeepAliveConnection
from msarch.testing.load import PATH, RoundtripLoad, metric, percentile_ms, roundtrip_body
from msarch.testing.stack import Stack, pid_of

DRAIN_TIMEOUT_S = 300.0
FRAME_TIMEOUT_S = 10.0
SERVICES_ON_PATH = ("gateway", "roundtrip", "store", "websocket")
VALUE = "v" * 32
WARM_UP = (4, 1.0)
"""Connections and seconds of the load before any measured one."""

Count = Callable[[], Awaitable[int]]


class RoundtripBaseline(Protocol):
    """A chain measured the way msarch is (bench.baselines.chain.RawChain)."""

    name: str

    async def load(self, concurrency: int, duration_s: float) -> dict[str, Any]:
        """The figures of `_load_phase` that do not depend on msarch's processes."""
        ...

    async def latency(self, samples: int) -> dict[str, Any]:
        """frame_latency's figures."""
        ...


async def reached(count: Count, target: int, timeout_s: float, what: str) -> float:
    """Poll `count` until it reaches `target`; the time it did (perf_counter)."""
    deadline = time.perf_counter() + timeout_s
    while (now := await count()) < target:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} reached {now} of {target} within {timeout_s:g} s")
        await asyncio.sleep(0.02)
    return time.perf_counter()


def new_load(url: str, concurrency: int) -> RoundtripLoad:
    return RoundtripLoad(
        url, f"bench-{uuid4().hex[:8]}", concurrency=concurrency, value=lambda _: VALUE
    )


def answer_figures(load: RoundtripLoad) -> dict[str, Any]:
    """What the client saw of a load: 202s, their rate and latency, anything else."""
    return {
        "requests_202": load.accepted,
        "req_per_s": round(load.per_s, 1),
        "p50_ms": load.percentile_ms(0.50),
        "p99_ms": load.percentile_ms(0.99),
        "other_statuses": {str(k): v for k, v in load.statuses.items() if k not in (0, 202)},
        "errors": dict(load.errors),
    }


def completion_figures(
    load: RoundtripLoad, started: float, behind_at_end: int, completed_at: float
) -> dict[str, Any]:
    """How the far end kept up: roundtrips completed per second from the load's start until
    the last one was, and the backlog when the load ended (in seconds of its 202 rate)."""
    return {
        "completed_per_s": round(load.accepted / (completed_at - started), 1),
        "backlog_at_end": behind_at_end,
        "backlog_at_end_s": round(behind_at_end / load.per_s, 2) if load.per_s else 0.0,
        "completed_after_load_s": round(completed_at - started - load.seconds, 2),
    }


async def _load_phase(
    stack: Stack, live: Store, port: int, concurrency: int, duration_s: float
) -> dict[str, Any]:
    """One closed-loop load, then wait until the store has logged every accepted roundtrip
    and the websocket service has consumed each."""
    pids = {name: pid_of(stack.processes[name]) for name in SERVICES_ON_PATH}
    cpu_before = cpu_snapshot(pids)

    async def forwarded() -> int:
        url = stack.settings.url_of("websocket")
        return int(await metric(url, "msarch_messages_consumed_total", service="websocket"))

    before, forwarded_before = await events_length(live), await forwarded()
    started = time.perf_counter()
    load = new_load(f"http://{stack.settings.host}:{port}", concurrency)
    await load.run(duration_s=duration_s)
    logged_at_end = await events_length(live) - before
    drained_at = await wait_for_events(live, before + load.accepted, DRAIN_TIMEOUT_S)
    appended = await events_length(live) - before
    what = "the websocket service's forward_roundtrip messages"
    completed_at = await reached(forwarded, forwarded_before + load.accepted, DRAIN_TIMEOUT_S, what)
    return {
        **answer_figures(load),
        "events_appended": appended,
        "events_per_s_until_drained": round(appended / (drained_at - started), 1),
        "drain_after_load_s": round(drained_at - started - load.seconds, 2),
        # The store's backlog: the "keeping up" is about it.
        **completion_figures(load, started, max(0, load.accepted - logged_at_end), completed_at),
        "cpu_ms_per_request": cpu_ms_per(cpu_before, pids, load.accepted),
    }


async def websocket_latency(stack: Stack, samples: int) -> dict[str, Any]:
    """POST one roundtrip at a time through the gateway; time its 202 and its websocket frame."""
    return await frame_latency(stack.settings.host, stack.settings.gateway_port, samples)


async def frame_latency(
    host: str, port: int, samples: int, ws_port: int | None = None
) -> dict[str, Any]:
    """POST one roundtrip at a time to host:port, with a client connected to /ws there (or on
    `ws_port`); time each 202 and the frame of that id."""
    arrivals: dict[str, float] = {}
    frame_came = asyncio.Event()
    post_s: list[float] = []
    frame_s: list[float] = []
    connection = KeepAliveConnection(host, port)

    async def read_frames(socket: websockets.ClientConnection) -> None:
        async for frame in socket:
            frame_id = json.loads(frame).get("id")
            if frame_id is not None:
                arrivals[str(frame_id)] = time.perf_counter()
                frame_came.set()

    url = f"ws://{host}:{ws_port or port}/ws"
    async with websockets.connect(url, open_timeout=10) as socket:
        reader = asyncio.create_task(read_frames(socket))
        try:
            await asyncio.sleep(0.2)  # the hub registers the client after the handshake
            for number in range(samples):
                started = time.perf_counter()
                answer = await connection.post_json(PATH, roundtrip_body(f"ws-{number}", VALUE))
                post_s.append(time.perf_counter() - started)
                assert answer.status == 202, f"roundtrip answered {answer.status}"
                event_id = str(json.loads(answer.body)["id"])
                async with asyncio.timeout(FRAME_TIMEOUT_S):
                    while event_id not in arrivals:
                        frame_came.clear()
                        if event_id not in arrivals:
                            await frame_came.wait()
                frame_s.append(arrivals.pop(event_id) - started)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await connection.close()
    return {
        "samples": samples,
        "post_202_p50_ms": percentile_ms(post_s, 0.50),
        "p50_ms": percentile_ms(frame_s, 0.50),
        "p90_ms": percentile_ms(frame_s, 0.90),
        "p99_ms": percentile_ms(frame_s, 0.99),
        "max_ms": round(max(frame_s) * 1000, 2),
    }


@dataclass
class Repetitions:
    """Every repetition's figures, msarch's and the raw chain's."""

    gateway: list[dict[str, Any]] = field(default_factory=list)
    websocket: list[dict[str, Any]] = field(default_factory=list)
    raw_load: list[dict[str, Any]] = field(default_factory=list)
    raw_latency: list[dict[str, Any]] = field(default_factory=list)


async def _repeat(
    stack: Stack,
    live: Store,
    load: tuple[int, float],
    samples: int,
    repeat: int,
    baseline: RoundtripBaseline | None,
) -> Repetitions:
    concurrency, duration_s = load
    runs = Repetitions()
    for _ in range(repeat):
        port = stack.settings.gateway_port
        runs.gateway.append(await _load_phase(stack, live, port, concurrency, duration_s))
        if baseline is not None:
            runs.raw_load.append(await baseline.load(concurrency, duration_s))
        runs.websocket.append(await websocket_latency(stack, samples))
        if baseline is not None:
            runs.raw_latency.append(await baseline.latency(samples))
    return runs


def _by_completed(run: dict[str, Any]) -> float:
    return float(run["completed_per_s"])


def _by_p50(run: dict[str, Any]) -> float:
    return float(run["p50_ms"])


async def bench_roundtrip(
    stack: Stack,
    backend: str,
    duration_s: float,
    concurrency: int,
    samples: int,
    repeat: int = 1,
    baseline: RoundtripBaseline | None = None,
) -> dict[str, Any]:
    live = stack.store()
    try:
        await _load_phase(stack, live, stack.settings.gateway_port, *WARM_UP)
        if baseline is not None:
            await baseline.load(*WARM_UP)
        print(f"bench: {backend}: roundtrip load, {concurrency} connections ...", flush=True)
        direct = await _load_phase(
            stack, live, stack.settings.roundtrip_port, concurrency, duration_s
        )
        runs = await _repeat(stack, live, (concurrency, duration_s), samples, repeat, baseline)
    finally:
        await live.close()
    figures: dict[str, Any] = {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "repeat": repeat,
        "direct": direct,
        "gateway": median_run(runs.gateway, _by_completed),
        "websocket": median_run(runs.websocket, _by_p50),
        "gateway_runs": runs.gateway,
        "websocket_runs": runs.websocket,
    }
    if baseline is not None:
        figures["raw"] = {
            "name": baseline.name,
            "load": median_run(runs.raw_load, _by_completed),
            "latency": median_run(runs.raw_latency, _by_p50),
            "load_runs": runs.raw_load,
            "latency_runs": runs.raw_latency,
        }
    _print_load(backend, figures)
    _print_latency(backend, figures)
    return figures


def _print_load(backend: str, figures: dict[str, Any]) -> None:
    rows = [("baseline: roundtrip service direct", figures["direct"]),
            (_median_of("through the gateway", figures), figures["gateway"])]  # fmt: skip
    if raw := figures.get("raw"):
        rows.append((_median_of(raw["name"], figures), raw["load"]))
    print_table(
        f"roundtrip, {figures['concurrency']} keep-alive connections, "
        f"{figures['duration_s']:g} s each ({backend})",
        ["target", "202/s", "completed/s", "p50 ms", "p99 ms", "non-202", "backlog at end s",
         "events/s until drained", "CPU ms/req gateway", "CPU ms/req roundtrip"],
        [
            [name, f["req_per_s"], f["completed_per_s"], f["p50_ms"], f["p99_ms"],
             sum(f["other_statuses"].values()) + sum(f["errors"].values()),
             f["backlog_at_end_s"], f.get("events_per_s_until_drained", "-"),
             f.get("cpu_ms_per_request", {}).get("gateway", "-"),
             f.get("cpu_ms_per_request", {}).get("roundtrip", "-")]
            for name, f in rows
        ],
        note="completed/s = 202 answers / (load + time until the websocket end consumed the "
        "last); backlog at end = what the store (raw chain: its websocket server) had not "
        "done yet when the load stopped, in seconds of the 202 rate; CPU ms/req = the "
        "process's CPU time / 202 answers (robust to other load)",
    )  # fmt: skip


def _print_latency(backend: str, figures: dict[str, Any]) -> None:
    ws = figures["websocket"]
    rows = [[_median_of("through the gateway", figures), ws["post_202_p50_ms"], ws["p50_ms"],
             ws["p90_ms"], ws["p99_ms"], ws["max_ms"]]]  # fmt: skip
    if raw := figures.get("raw"):
        lat = raw["latency"]
        rows.append([_median_of(raw["name"], figures), lat["post_202_p50_ms"], lat["p50_ms"],
                     lat["p90_ms"], lat["p99_ms"], lat["max_ms"]])  # fmt: skip
    print_table(
        f"POST -> websocket frame, {ws['samples']} sequential samples ({backend})",
        ["target", "POST->202 p50 ms", "POST->frame p50 ms", "p90 ms", "p99 ms", "max ms"],
        rows,
        note="baseline: the 202 alone (p50); the rest is broker -> store -> Redis -> broker -> "
        "websocket service -> gateway (raw chain: broker -> worker -> Redis -> broker -> "
        "websocket server)",
    )


def _median_of(name: str, figures: dict[str, Any]) -> str:
    repeat = int(figures["repeat"])
    return f"{name} (median of {repeat})" if repeat > 1 else name
