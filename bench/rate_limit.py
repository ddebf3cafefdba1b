"""The gateway's CPU per request with a rate limit on the route and without (the baseline),
measured in the same run on the same stack: two gateway instances in front of the same
services, one with the built-in table, one whose /api/roundtrip route has a rate limit too
large to refuse anything, so every request pays for the Redis script and nothing else differs.
The loads alternate between them, round by round.
"""

import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.cpu import cpu_ms_per, cpu_snapshot
from bench.report import print_table
from msarch.testing.load import RoundtripLoad
from msarch.testing.stack import Stack, pid_of

LIMITED = """
[[routes]]
prefix = "/api/roundtrip"
service = "roundtrip"
rate_limit = { requests = 1000000000, period_s = 1 }
"""


async def bench_rate_limit(
    stack: Stack, backend: str, duration_s: float = 3.0, rounds: int = 3, concurrency: int = 16
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="msarch-bench-limit-") as folder:
        config = Path(folder) / "gateway.toml"
        config.write_text(LIMITED)
        limited = await stack.add_instance("gateway", gateway_config=str(config))
        gateways = {"off": stack.processes["gateway"], "on": limited}
        cpu: dict[str, list[float]] = {"off": [], "on": []}
        rates: dict[str, list[float]] = {"off": [], "on": []}
        for number in range(rounds):
            for mode, gateway in gateways.items():
                pid = {mode: pid_of(gateway)}
                load = RoundtripLoad(gateway.url, f"bench-limit-{mode}-{number}", concurrency)
                before = cpu_snapshot(pid)
                await load.run(duration_s=duration_s)
                cpu[mode].append(cpu_ms_per(before, pid, len(load.answers))[mode])
                rates[mode].append(load.per_s)
                if set(load.statuses) != {202}:
                    raise RuntimeError(f"rate limit {mode}: answers {dict(load.statuses)}")
        await limited.stop()
    medians = {mode: statistics.median(cpu[mode]) for mode in gateways}
    figures: dict[str, Any] = {
        mode: {
            "gateway_cpu_ms_per_request": round(medians[mode], 3),
            "roundtrips_per_s": round(statistics.median(rates[mode]), 1),
        }
        for mode in gateways
    }
    figures["cpu_ratio_on_off"] = round(medians["on"] / medians["off"], 2)
    print_table(
        f"gateway CPU per request, rate limit on vs off ({backend}, medians of {rounds})",
        ["rate limit", "gateway CPU ms/request", "202s/s"],
        [
            [mode, figures[mode]["gateway_cpu_ms_per_request"], figures[mode]["roundtrips_per_s"]]
            for mode in ("off", "on")
        ],
        note=f"on/off: {figures['cpu_ratio_on_off']}x (off is the baseline, same run)",
    )
    return figures
