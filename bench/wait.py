"""The cost of WAIT: store_key_value acknowledged on the primary's word (the baseline) vs once
a replica holds the write (MSARCH_REDIS_WAIT_REPLICAS=1, the default behind Sentinel).

A primary and one replica of the run's own (msarch.testing.servers, AOF fsync always on both,
as compose runs Redis), one write at a time, the two modes interleaved write by write so that
both see the same machine.
"""

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import print_table
from bench.session import NAMESPACE_PREFIX
from msarch.messages import KeyValue
from msarch.settings import Settings
from msarch.storage import Store
from msarch.testing.isolation import new_namespace
from msarch.testing.load import percentile_ms
from msarch.testing.servers import ReplicatedRedis

WARM_UP = 50


async def bench_wait(writes: int = 1000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="msarch-bench-wait-") as data_dir:
        async with ReplicatedRedis(Path(data_dir), sentinels=0) as redis:
            stores = {
                replicas: Store.from_settings(
                    Settings(
                        redis_url=redis.primary.url,
                        redis_sentinels=None,
                        redis_wait_replicas=replicas,
                        namespace=new_namespace(NAMESPACE_PREFIX),
                    )
                )
                for replicas in (0, 1)
            }
            latencies_s: dict[int, list[float]] = {0: [], 1: []}
            try:
                for i in range(WARM_UP + writes):
                    # Alternate which mode goes first, so neither always follows the other.
                    for replicas in (0, 1) if i % 2 else (1, 0):
                        kv = KeyValue(key=f"k{i}", value="v" * 100)
                        started = time.perf_counter()
                        await stores[replicas].store_key_value(kv)
                        if i >= WARM_UP:
                            latencies_s[replicas].append(time.perf_counter() - started)
            finally:
                for store in stores.values():
                    await store.close()
    figures: dict[str, Any] = {
        f"wait_{replicas}": {
            "writes": writes,
            "p50_ms": percentile_ms(latencies_s[replicas], 0.5),
            "p99_ms": percentile_ms(latencies_s[replicas], 0.99),
            "writes_per_s": round(writes / sum(latencies_s[replicas]), 1),
        }
        for replicas in (0, 1)
    }
    base, waited = figures["wait_0"], figures["wait_1"]
    figures["p50_ratio"] = round(waited["p50_ms"] / base["p50_ms"], 2)
    print_table(
        f"WAIT before the ack: store_key_value, one write at a time ({writes:,} each)",
        ["mode", "p50 ms", "p99 ms", "writes/s", "p50 ratio"],
        [
            ["baseline: acknowledged by the primary", base["p50_ms"], base["p99_ms"],
             base["writes_per_s"], "1.00x"],
            ["WAIT 1: and held by the replica", waited["p50_ms"], waited["p99_ms"],
             waited["writes_per_s"], f"{figures['p50_ratio']:.2f}x"],
        ],
        note="own primary and replica on loopback, AOF fsync always on both; "
        "EVALSHA + PUBLISH + WAIT in one pipeline vs EVALSHA alone",
    )  # fmt: skip
    return figures
