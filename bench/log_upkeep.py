"""Operating the log: snapshot time and size, trim time, and replay from the snapshot against
replay from the first event (the baseline), for the log of one large batch and some roundtrips.

A Redis of the run's own (AOF fsync always, as compose runs it). The log is written by the
store's own scripts (request, stage in groups of 1,000, which commits the batch, and
store_key_value), not through the broker: what is measured is the log, not the services.
"""

import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

from bench.report import print_table
from bench.session import NAMESPACE_PREFIX
from msarch.messages import KeyValue, item_of
from msarch.replay import Report, rebuild
from msarch.snapshots import restore_into, take, trim
from msarch.storage import Store
from msarch.testing.isolation import new_namespace
from msarch.testing.servers import PrivateRedis

STAGE_GROUP = 1_000
ROUNDTRIPS_AFTER = 1_000
"""Events written after the snapshot: what replay from it still applies."""


async def bench_log_upkeep(items: int, roundtrips: int = 10_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="msarch-bench-log-") as data_dir:
        server = PrivateRedis(Path(data_dir))
        await server.start()
        store = Store.from_url(server.url, new_namespace(NAMESPACE_PREFIX))
        try:
            return await _measure(store, items, roundtrips)
        finally:
            await store.close()
            await server.stop()


async def _measure(store: Store, items: int, roundtrips: int) -> dict[str, Any]:
    started = time.perf_counter()
    await _write_batch(store, items)
    for index in range(roundtrips):
        await store.store_key_value(KeyValue(key=f"k{index % 1000}", value="v" * 100))
    written_s = time.perf_counter() - started
    events = await store.events.length()
    log_mb = await _mb(store, [store.keys.events])

    from_start_s = await _replay_s(store, from_snapshot=False)
    snapshot = await take(store)
    snapshot_mb = await _namespace_mb(store, snapshot.namespace)
    for index in range(ROUNDTRIPS_AFTER):
        await store.store_key_value(KeyValue(key=f"after-{index}", value="v" * 100))
    from_snapshot_s = await _replay_s(store, from_snapshot=True)
    started = time.perf_counter()
    trimmed = await trim(store, "18446744073709551615-18446744073709551615")
    trim_s = time.perf_counter() - started
    figures: dict[str, Any] = {
        "batch_items": items,
        "roundtrips": roundtrips,
        "events": events,
        "written_s": round(written_s, 2),
        "log_mb": log_mb,
        "snapshot_s": snapshot.seconds,
        "snapshot_mb": snapshot_mb,
        "trim_s": round(trim_s, 3),
        "trimmed_events": trimmed.removed,
        "log_mb_after_trim": await _mb(store, [store.keys.events]),
        "replay_from_first_event_s": round(from_start_s, 2),
        "replay_from_snapshot_s": round(from_snapshot_s, 2),
        "replay_from_snapshot_events": ROUNDTRIPS_AFTER,
    }
    print_table(
        "log upkeep (one Redis of its own)",
        ["what", "figure", "baseline (same run)"],
        [
            ["log written", f"{events:,} events, {log_mb} MB", f"in {written_s:.1f} s"],
            ["msarch snapshot", f"{snapshot.seconds:.2f} s, {snapshot_mb} MB", "-"],
            ["msarch trim (all covered)", f"{trim_s:.3f} s, {trimmed.removed:,} events", "-"],
            [
                "replay",
                f"{from_snapshot_s:.2f} s from the snapshot (+{ROUNDTRIPS_AFTER:,} events)",
                f"{from_start_s:.2f} s from the first event",
            ],
        ],
        note=f"a {items:,}-item batch and {roundtrips:,} roundtrips",
    )
    return figures


async def _write_batch(store: Store, items: int) -> None:
    batch_id = uuid4()
    await store.request_batch(batch_id, items)
    for start in range(0, items, STAGE_GROUP):
        group = range(start, min(start + STAGE_GROUP, items))
        await store.stage_items([item_of(batch_id, index, items) for index in group])


async def _replay_s(store: Store, from_snapshot: bool) -> float:
    """Rebuild time into a scratch namespace, dropped after (the comparison is not timed)."""
    scratch = store.in_namespace(f"{store.namespace}scratch-{uuid4().hex[:6]}-")
    started = time.perf_counter()
    after = await restore_into(store, scratch) if from_snapshot else None
    report = Report()
    await rebuild(store, scratch, report, after=after)
    seconds = time.perf_counter() - started
    await scratch.projections.drop()
    if report.differences:
        raise RuntimeError(f"the log did not replay: {report.differences[:3]}")
    return seconds


async def _namespace_mb(store: Store, namespace: str) -> float:
    keys = [str(k) async for k in store.redis.scan_iter(match=f"{namespace}*", count=1000)]
    return await _mb(store, keys)


async def _mb(store: Store, keys: list[str]) -> float:
    used = 0
    for key in keys:
        used += int(await store.redis.memory_usage(key, samples=0) or 0)
    return round(used / 1e6, 1)
