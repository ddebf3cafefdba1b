"""Resident memory of service processes: idle, then sampled every 50 ms during a run."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

SAMPLE_INTERVAL_S = 0.05


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB, from /proc/<pid>/status (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


@dataclass
class RssPeaks:
    idle_kib: dict[str, int]
    peak_kib: dict[str, int] = field(default_factory=dict)
    samples: int = 0

    def delta_mib(self, name: str) -> float:
        return (self.peak_kib.get(name, 0) - self.idle_kib[name]) / 1024

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            name: {
                "idle_mib": round(self.idle_kib[name] / 1024, 1),
                "peak_mib": round(self.peak_kib.get(name, 0) / 1024, 1),
                "delta_mib": round(self.delta_mib(name), 1),
            }
            for name in self.idle_kib
        }


@contextlib.asynccontextmanager
async def sampling_rss(pids: Mapping[str, int]) -> AsyncIterator[RssPeaks]:
    """Idle RSS now, and the peak while the body runs."""
    peaks = RssPeaks(idle_kib={name: rss_kib(pid) for name, pid in pids.items()})
    peaks.peak_kib = dict(peaks.idle_kib)

    async def sample() -> None:
        while True:
            for name, pid in pids.items():
                peaks.peak_kib[name] = max(peaks.peak_kib[name], rss_kib(pid))
            peaks.samples += 1
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    sampler = asyncio.create_task(sample())
    try:
        yield peaks
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
