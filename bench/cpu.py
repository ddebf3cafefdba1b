"""CPU time of service processes: a figure that other load on the machine does not distort.

On a shared 2-core machine wall-clock rates swing with whatever else runs;
the CPU a process spent per request (or per item) mostly does not.
"""

import os
from collections.abc import Mapping

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_ms_per(
    before: Mapping[str, float], pids: Mapping[str, int], units: int
) -> dict[str, float]:
    """CPU milliseconds each process spent per unit (request, item) since `before`."""
    return {
        name: round((cpu_seconds(pid) - before[name]) * 1000 / max(units, 1), 3)
        for name, pid in pids.items()
    }
