"""What the services print under load, per-message lines on (MSARCH_LOG_LEVEL=DEBUG: msarch's
lines for each message and FastStream's, a superset of what INFO printed before msarch.logs)
and off (INFO: state changes and a summary every 10 s): lines, bytes, and the services' CPU
per message, the same soak on two stacks one after the other.

The soak is issue 17's, shortened: `concurrency` keep-alive connections of roundtrips through
the gateway and a 1,000-item batch every 10 s, for `duration_s`.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.cpu import cpu_seconds
from bench.report import print_table
from bench.session import bench_stack
from msarch.testing.load import RoundtripLoad
from msarch.testing.stack import Stack, pid_of

BATCH_ITEMS = 1000
BATCH_EVERY_S = 10.0


@dataclass
class Printed:
    """Counts what the services print (the terminal of `msarch up` would show it all)."""

    lines: int = 0
    bytes: int = 0
    counting: bool = False

    def __call__(self, service: str, line: str) -> None:
        if self.counting:
            self.lines += 1
            self.bytes += len(line.encode()) + 1


async def _batches(stack: Stack, until: float) -> int:
    """A 1,000-item batch every 10 s until `until`; how many items were Done."""
    done = 0
    async with httpx.AsyncClient(timeout=120) as client:
        while time.monotonic() < until:
            started = time.monotonic()
            answer = await client.post(f"{stack.gateway_url}/api/batch", json={"size": BATCH_ITEMS})
            if answer.status_code != 200:
                raise RuntimeError(f"batch answered {answer.status_code}: {answer.text[:200]}")
            done += BATCH_ITEMS
            await asyncio.sleep(max(0.0, BATCH_EVERY_S - (time.monotonic() - started)))
    return done


async def _soak(backend: str, level: str, duration_s: float, concurrency: int) -> dict[str, Any]:
    printed = Printed()
    async with bench_stack(backend, printer=printed, log_level=level) as stack:
        pids = [pid_of(p) for p in stack.processes.values()]
        load = RoundtripLoad(stack.gateway_url, f"bench-logs-{level}", concurrency)
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        printed.counting = True
        until = time.monotonic() + duration_s
        _, items = await asyncio.gather(load.run(duration_s=duration_s), _batches(stack, until))
        await asyncio.sleep(1.0)  # the last frames and their lines
        printed.counting = False
        cpu_ms = (sum(cpu_seconds(pid) for pid in pids) - cpu_before) * 1000
    if set(load.statuses) != {202}:
        raise RuntimeError(f"log soak {level}: answers {dict(load.statuses)}")
    messages = load.accepted + items
    return {
        "roundtrips": load.accepted,
        "batch_items": items,
        "lines": printed.lines,
        "bytes": printed.bytes,
        "lines_per_s": round(printed.lines / duration_s, 1),
        "services_cpu_ms_per_message": round(cpu_ms / max(messages, 1), 3),
    }


async def bench_logs(
    backend: str, duration_s: float = 30.0, concurrency: int = 16
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "debug": await _soak(backend, "DEBUG", duration_s, concurrency),
        "info": await _soak(backend, "INFO", duration_s, concurrency),
    }
    debug, info = figures["debug"], figures["info"]
    figures["lines_ratio_info_debug"] = round(info["lines"] / max(debug["lines"], 1), 4)
    figures["cpu_ratio_info_debug"] = round(
        info["services_cpu_ms_per_message"] / debug["services_cpu_ms_per_message"], 3
    )
    columns = ("roundtrips", "batch_items", "lines", "bytes", "lines_per_s")
    rows = [
        [name, *(f[c] for c in columns), f["services_cpu_ms_per_message"]]
        for name, f in (("DEBUG", debug), ("INFO (default)", info))
    ]
    print_table(
        f"what the services print in a {duration_s:g} s soak ({backend}, {concurrency} "
        f"connections + a {BATCH_ITEMS:,}-item batch every {BATCH_EVERY_S:g} s)",
        ["log level", "roundtrips", "batch items", "lines", "bytes", "lines/s", "CPU ms/message"],
        rows,
        note=(
            f"INFO/DEBUG: {figures['lines_ratio_info_debug']}x the lines, "
            f"{figures['cpu_ratio_info_debug']}x the CPU per message (DEBUG is the baseline, "
            "same run)"
        ),
    )
    return figures
