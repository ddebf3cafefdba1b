"""CPU time of containers, from their cgroups: per service, summed over its instances.

A container's cgroup counts every process in it, the healthcheck that Docker runs in it every
5 s included (a Python start, ~0.1 s of CPU). So each container's idle rate is measured once,
at rest, and taken off what a phase spent for as long as the phase lasted: the figures are
then what the work itself cost, whatever else the container does on the side.
"""

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
V2_USAGE = re.compile(r"^usage_usec (\d+)$", re.MULTILINE)


def usage_files(container_id: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """Where Docker puts a container's CPU usage, for each cgroup layout, most likely first:
    cgroups v1 with the cgroupfs driver (`cpu,cpuacct` joined or `cpuacct` mounted alone),
    v1 with the systemd driver, then v2 with either driver."""
    v1 = [
        controller / "docker" / container_id / "cpuacct.usage"
        for controller in (root / "cpu,cpuacct", root / "cpuacct")
    ]
    v1_systemd = [
        controller / "system.slice" / f"docker-{container_id}.scope" / "cpuacct.usage"
        for controller in (root / "cpu,cpuacct", root / "cpuacct")
    ]
    v2 = [
        root / "docker" / container_id / "cpu.stat",
        root / "system.slice" / f"docker-{container_id}.scope" / "cpu.stat",
    ]
    return [*v1, *v1_systemd, *v2]


def usage_file(container_id: str, root: Path = CGROUP_ROOT) -> Path:
    """The first of `usage_files` that exists; FileNotFoundError naming every path tried."""
    candidates = usage_files(container_id, root)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no CPU usage of container {container_id[:12]} in {tried}")


def parse_usage_ns(path: Path, text: str) -> int:
    """CPU nanoseconds from a cgroup file: v1 cpuacct.usage is the number of nanoseconds,
    v2 cpu.stat has a `usage_usec N` line."""
    if path.name == "cpu.stat":
        found = V2_USAGE.search(text)
        if found is None:
            raise ValueError(f"{path}: no usage_usec line in {text[:200]!r}")
        return int(found.group(1)) * 1000
    return int(text.strip())


def read_usage_ns(path: Path) -> int:
    return parse_usage_ns(path, path.read_text(encoding="ascii"))


def service_group(compose_service: str) -> str:
    """The service a compose service is an instance of: gateway-2 is a gateway, rabbitmq1..3
    are RabbitMQ, redis-replica is Redis, sentinel1..3 are Sentinels."""
    name = compose_service.removesuffix("-replica")
    name = re.sub(r"-\d+$", "", name)
    return re.sub(r"(?<=[a-z])\d+$", "", name)


@dataclass(frozen=True)
class Container:
    id: str
    """The full container id."""
    service: str
    """Its compose service (gateway-2, rabbitmq1 ...)."""
    usage: Path

    @property
    def group(self) -> str:
        return service_group(self.service)


@dataclass(frozen=True)
class CpuSample:
    at: float
    """time.monotonic() when it was read"""
    ns: dict[str, int]
    """container id -> CPU ns so far"""


def sample(containers: list[Container]) -> CpuSample:
    return CpuSample(time.monotonic(), {c.id: read_usage_ns(c.usage) for c in containers})


def idle_rates(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """CPU ns per second each container spent between two samples (at rest: its idle rate)."""
    seconds = max(after.at - before.at, 1e-9)
    return {cid: (after.ns[cid] - before.ns[cid]) / seconds for cid in before.ns}


def cpu_ns_per_unit(
    before: CpuSample,
    after: CpuSample,
    groups: Mapping[str, str],
    units: int,
    idle_ns_per_s: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """CPU ns per unit (roundtrip, item) of each group (container id -> group in `groups`),
    summed over its containers, less each container's idle rate over the phase (never below
    zero per container)."""
    seconds = after.at - before.at
    totals: dict[str, float] = {}
    for cid, group in groups.items():
        spent: float = after.ns[cid] - before.ns[cid]
        if idle_ns_per_s is not None:
            spent = max(spent - idle_ns_per_s.get(cid, 0.0) * seconds, 0.0)
        totals[group] = totals.get(group, 0.0) + spent
    return {group: total / max(units, 1) for group, total in sorted(totals.items())}


def per_core(ns_per_unit: float) -> float:
    """Units per second that this much CPU per unit allows on one whole core (inf for 0)."""
    return 1e9 / ns_per_unit if ns_per_unit > 0 else float("inf")
