"""Rebuild every projection from the event log, and compare it with the live one.

The log is read a page at a time and the projections are written in
pipelines, so neither side is ever held in memory whole. What each event
changes is msarch.storage.projections; this module only drives it.
"""

import json
import time
from collections import Counter
from dataclasses import dataclass, field

from msarch.storage import BatchHash, Store


@dataclass
class Report:
    events: Counter[str] = field(default_factory=Counter)
    kv_keys: int = 0
    batches: int = 0
    batch_fields: int = 0
    differences: list[str] = field(default_factory=list)
    rebuild_s: float = 0.0
    compare_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.differences

    def differ(self, what: str) -> None:
        if len(self.differences) < 50:
            self.differences.append(what)


async def rebuild(
    source: Store,
    target: Store,
    report: Report,
    after: str | None = None,
    until: str | None = None,
) -> None:
    """Apply the log of `source` (the events after `after`, up to `until`; by default all of
    them) to the namespace of `target`: empty, or holding the projections as of `after`."""
    started = time.perf_counter()
    async for page in source.events.pages(after, until=until):
        writer = target.projections.writer()
        for event in page:
            report.events[event.type.value] += 1
            writer.apply(event)
        for error in await writer.execute():
            report.differ(f"the log does not replay: {error}")
    report.rebuild_s = time.perf_counter() - started


async def compare(live: Store, rebuilt: Store, report: Report) -> None:
    """Every projection of `live` equals the one rebuilt from its log."""
    async for keys in live.projections.kv_keys():
        report.kv_keys += len(keys)
        a = await live.key_values.get_many(keys)
        b = await rebuilt.key_values.get_many(keys)
        for key, x, y in zip(keys, a, b, strict=True):
            if x != y:
                report.differ(f"kv:{key}: live {x!r:.60} rebuilt {y!r:.60}")
    if (extra := await rebuilt.projections.kv_count() - report.kv_keys) != 0:
        report.differ(f"the rebuilt projection has {extra} kv keys more than the live one")

    index_live = await live.projections.batch_index()
    index_rebuilt = await rebuilt.projections.batch_index()
    if index_live != index_rebuilt:
        report.differ(f"batch index: live {len(index_live)} entries, rebuilt {len(index_rebuilt)}")
    async for batch_ids in live.projections.batch_ids():
        for batch_id in batch_ids:
            await _compare_batch(live, rebuilt, batch_id, report)


async def _compare_batch(live: Store, rebuilt: Store, batch_id: str, report: Report) -> None:
    fields = ("status", "size")
    a = await live.projections.batch_meta(batch_id, fields)
    b = await rebuilt.projections.batch_meta(batch_id, fields)
    if a != b:
        report.differ(f"batch:{batch_id} meta: live {a} rebuilt {b}")
    report.batches += 1
    for which in BatchHash:
        name = live.projections.name(batch_id, which)
        n = await live.projections.hash_length(batch_id, which)
        if n != await rebuilt.projections.hash_length(batch_id, which):
            report.differ(f"{name}: live has {n} fields, rebuilt a different number")
            continue
        report.batch_fields += n if which is BatchHash.FINAL else 0
        if not await _same_hash(live, rebuilt, batch_id, which):
            report.differ(f"{name}: a field differs")


async def _same_hash(live: Store, rebuilt: Store, batch_id: str, which: BatchHash) -> bool:
    """Field by field, a page of the live hash at a time against one HMGET of the rebuilt."""
    async for page in live.projections.hash_pages(batch_id, which):
        names = list(page)
        theirs = await rebuilt.projections.hash_fields(batch_id, which, names)
        for name, raw in zip(names, theirs, strict=True):
            # Compared decoded: Lua's cjson and Python's json escape differently.
            if raw is None or json.loads(raw) != json.loads(page[name]):
                return False
    return True


async def replay_and_compare(live: Store, scratch: Store, start_after: str | None = None) -> Report:
    """Rebuild `live`'s projections in `scratch` and compare. `scratch` is empty, or holds a
    snapshot's projections as of `start_after` (msarch.snapshots.restore_into)."""
    report = Report()
    if start_after is None and (gap := await live.gap_after("0-0")):
        report.differ(f"the log no longer starts at its first event: {gap.detail}")
        return report
    await rebuild(live, scratch, report, after=start_after)
    started = time.perf_counter()
    await compare(live, scratch, report)
    report.compare_s = time.perf_counter() - started
    return report


async def drop(store: Store) -> None:
    """Delete every key of a (scratch) namespace."""
    await store.projections.drop()
