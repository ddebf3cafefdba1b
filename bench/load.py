"""Closed-loop load: N connections, each POSTing as soon as its previous answer came back."""

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from uuid import uuid4

from bench.http_client import KeepAliveConnection

VALUE = "v" * 32


@dataclass
class LoadResult:
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    """Of the expected answers only."""
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return len(self.latencies_s)

    @property
    def per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return percentile_ms(self.latencies_s, q)


def percentile_ms(latencies_s: list[float], q: float) -> float:
    if not latencies_s:
        return float("nan")
    ordered = sorted(latencies_s)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def roundtrip_body(key: str) -> bytes:
    return json.dumps({"key": key, "value": VALUE}).encode()


async def closed_loop(
    host: str, port: int, path: str, concurrency: int, duration_s: float, expect: int = 202
) -> LoadResult:
    result = LoadResult()
    run = uuid4().hex[:8]
    deadline = time.perf_counter() + duration_s

    async def worker(number: int) -> None:
        connection = KeepAliveConnection(host, port)
        sent = 0
        try:
            while time.perf_counter() < deadline:
                body = roundtrip_body(f"bench-{run}-{number}-{sent}")
                sent += 1
                started = time.perf_counter()
                try:
                    answer = await connection.post_json(path, body)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    result.errors[type(exc).__name__] += 1
                    await connection.close()
                    await asyncio.sleep(0.05)
                    continue
                result.statuses[answer.status] += 1
                if answer.status == expect:
                    result.latencies_s.append(time.perf_counter() - started)
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result
