"""Roundtrip: req/s and latency of 202 answers through the gateway, against the same load
sent straight to the roundtrip service (the baseline: what the gateway costs), then the
end-to-end latency POST -> websocket frame, and the events/s the store appended meanwhile.
"""

import asyncio
import contextlib
import json
import time
from typing import Any
from uuid import uuid4

import websockets

from bench.cpu import cpu_ms_per, cpu_snapshot
from bench.event_log import events_length, wait_for_events
from bench.report import print_table
from msarch.storage import Store
from msarch.testing.http_client import KeepAliveConnection
from msarch.testing.load import PATH, RoundtripLoad, percentile_ms, roundtrip_body
from msarch.testing.stack import Stack, pid_of

DRAIN_TIMEOUT_S = 300.0
FRAME_TIMEOUT_S = 10.0
SERVICES_ON_PATH = ("gateway", "roundtrip", "store", "websocket")
VALUE = "v" * 32


async def _load_phase(
    stack: Stack, live: Store, port: int, concurrency: int, duration_s: float
) -> dict[str, Any]:
    """One closed-loop load, then wait until the store has logged every accepted roundtrip."""
    pids = {name: pid_of(stack.processes[name]) for name in SERVICES_ON_PATH}
    cpu_before = cpu_snapshot(pids)
    before = await events_length(live)
    started = time.perf_counter()
    load = RoundtripLoad(
        f"http://{stack.settings.host}:{port}",
        f"bench-{uuid4().hex[:8]}",
        concurrency=concurrency,
        value=lambda _: VALUE,
    )
    await load.run(duration_s=duration_s)
    drained_at = await wait_for_events(live, before + load.accepted, DRAIN_TIMEOUT_S)
    appended = await events_length(live) - before
    cpu_ms = cpu_ms_per(cpu_before, pids, load.accepted)
    return {
        "requests_202": load.accepted,
        "req_per_s": round(load.per_s, 1),
        "p50_ms": load.percentile_ms(0.50),
        "p99_ms": load.percentile_ms(0.99),
        "other_statuses": {str(k): v for k, v in load.statuses.items() if k not in (0, 202)},
        "errors": dict(load.errors),
        "events_appended": appended,
        "events_per_s_until_drained": round(appended / (drained_at - started), 1),
        "drain_after_load_s": round(drained_at - started - load.seconds, 2),
        "cpu_ms_per_request": cpu_ms,
    }


async def websocket_latency(stack: Stack, samples: int) -> dict[str, Any]:
    """POST one roundtrip at a time through the gateway; time its 202 and its websocket frame."""
    return await frame_latency(stack.settings.host, stack.settings.gateway_port, samples)


async def frame_latency(host: str, port: int, samples: int) -> dict[str, Any]:
    """POST one roundtrip at a time to the gateway at host:port, with a client connected to
    its /ws; time each 202 and the frame of that id."""
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

    async with websockets.connect(f"ws://{host}:{port}/ws", open_timeout=10) as socket:
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
        "p99_ms": percentile_ms(frame_s, 0.99),
        "max_ms": round(max(frame_s) * 1000, 2),
    }


async def bench_roundtrip(
    stack: Stack, backend: str, duration_s: float, concurrency: int, samples: int
) -> dict[str, Any]:
    live = stack.store()
    try:
        await _load_phase(stack, live, stack.settings.gateway_port, 4, 1.0)  # warm-up
        print(f"bench: {backend}: roundtrip load, {concurrency} connections ...", flush=True)
        direct = await _load_phase(
            stack, live, stack.settings.roundtrip_port, concurrency, duration_s
        )
        gateway = await _load_phase(
            stack, live, stack.settings.gateway_port, concurrency, duration_s
        )
        ws = await websocket_latency(stack, samples)
    finally:
        await live.close()
    print_table(
        f"roundtrip, {concurrency} keep-alive connections, {duration_s:g} s each ({backend})",
        ["target", "202/s", "p50 ms", "p99 ms", "non-202", "events/s until drained",
         "drain after load s", "CPU ms/req gateway", "CPU ms/req roundtrip"],
        [
            [name, f["req_per_s"], f["p50_ms"], f["p99_ms"],
             sum(f["other_statuses"].values()) + sum(f["errors"].values()),
             f["events_per_s_until_drained"], f["drain_after_load_s"],
             f["cpu_ms_per_request"]["gateway"], f["cpu_ms_per_request"]["roundtrip"]]
            for name, f in (("baseline: roundtrip service direct", direct),
                            ("through the gateway", gateway))
        ],
        note=f"gateway cost: {gateway['req_per_s'] / direct['req_per_s']:.2f}x the direct req/s; "
        "events/s = KeyValueStored events appended / (load + time until the log caught up); "
        "CPU ms/req = the process's CPU time / 202 answers (robust to other load)",
    )  # fmt: skip
    print_table(
        f"POST -> websocket frame through the gateway, {samples} sequential samples ({backend})",
        ["POST->202 p50 ms", "POST->frame p50 ms", "p99 ms", "max ms"],
        [[ws["post_202_p50_ms"], ws["p50_ms"], ws["p99_ms"], ws["max_ms"]]],
        note="baseline: the 202 alone (p50); the rest is broker -> store -> Redis -> broker -> "
        "websocket service -> gateway",
    )
    return {"concurrency": concurrency, "duration_s": duration_s, "direct": direct,
            "gateway": gateway, "websocket": ws}  # fmt: skip
