"""Rebuild every projection from the event log, and compare it with the live one.

The log is read a page at a time and the projections are written in
pipelines, so neither side is ever held in memory whole.
"""

import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio.client import Pipeline

from msarch.events import Event, EventType
from msarch.storage import Store

PAGE = 2000


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


async def iter_events(store: Store, page: int = PAGE) -> AsyncIterator[list[Event]]:
    after: str | None = None
    while events := await store.read_events(after, page):
        yield events
        after = events[-1].id


def _apply(event: Event, pipe: Pipeline, target: Store) -> None:
    p = event.payload
    if event.type is EventType.KeyValueStored:
        pipe.set(target.key("kv", p["key"]), p["value"])
        return
    bid = str(p["batch_id"])
    meta = target.key("batch", bid, "meta")
    staging = target.key("batch", bid, "staging")
    if event.type is EventType.BatchRequested:
        pipe.hsetnx(meta, "status", "PendingConsume")
        pipe.hset(meta, "size", p["size"])
    elif event.type is EventType.BatchItemStaged:
        pipe.hset(staging, str(p["index"]), json.dumps([p["key"], p["value"]]))
        pipe.hset(meta, mapping={"status": "PendingDatabase", "size": p["size"]})
    elif event.type is EventType.BatchCommitted:
        pipe.rename(staging, target.key("batch", bid))
        pipe.hset(meta, mapping={"status": "Done", "size": p["size"], "stored": p["size"]})
        pipe.zadd(target.key("batches"), {bid: p["committed_at"]})
    elif event.type is EventType.BatchFailed:
        pipe.delete(staging)
        pipe.hset(meta, mapping={"status": p["status"], "detail": p["detail"] or "", "stored": 0})


async def rebuild(source: Store, target: Store, report: Report) -> None:
    """Apply the whole log of `source` to the empty namespace of `target`."""
    started = time.perf_counter()
    async for page in iter_events(source):
        pipe = target.redis.pipeline(transaction=False)
        for event in page:
            report.events[event.type.value] += 1
            _apply(event, pipe, target)
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, Exception):
                report.differ(f"the log does not replay: {result}")
    report.rebuild_s = time.perf_counter() - started


async def _scan(store: Store, pattern: str) -> AsyncIterator[list[str]]:
    chunk: list[str] = []
    async for key in store.redis.scan_iter(match=store.prefix + pattern, count=1000):
        chunk.append(str(key)[len(store.prefix) :])
        if len(chunk) >= 500:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def _count(store: Store, pattern: str) -> int:
    return sum([len(c) async for c in _scan(store, pattern)])


async def compare(live: Store, rebuilt: Store, report: Report) -> None:
    """Every projection of `live` equals the one rebuilt from its log."""
    async for keys in _scan(live, "kv:*"):
        report.kv_keys += len(keys)
        a = await live.redis.mget([live.prefix + k for k in keys])
        b = await rebuilt.redis.mget([rebuilt.prefix + k for k in keys])
        for key, x, y in zip(keys, a, b, strict=True):
            if x != y:
                report.differ(f"{key}: live {x!r:.60} rebuilt {y!r:.60}")
    if (extra := await _count(rebuilt, "kv:*") - report.kv_keys) != 0:
        report.differ(f"the rebuilt projection has {extra} kv keys more than the live one")

    index_live = await live.redis.zrange(live.key("batches"), 0, -1, withscores=True)
    index_rebuilt = await rebuilt.redis.zrange(rebuilt.key("batches"), 0, -1, withscores=True)
    if index_live != index_rebuilt:
        report.differ(f"batch index: live {len(index_live)} entries, rebuilt {len(index_rebuilt)}")
    async for metas in _scan(live, "batch:*:meta"):
        for meta in metas:
            await _compare_batch(live, rebuilt, meta.removesuffix(":meta"), report)


async def _compare_batch(live: Store, rebuilt: Store, key: str, report: Report) -> None:
    fields = ("status", "size")
    a = await live.redis.hmget(live.prefix + key + ":meta", fields)
    b = await rebuilt.redis.hmget(rebuilt.prefix + key + ":meta", fields)
    if a != b:
        report.differ(f"{key} meta: live {a} rebuilt {b}")
    report.batches += 1
    for suffix in ("", ":staging"):
        n = await live.redis.hlen(live.prefix + key + suffix)
        if n != await rebuilt.redis.hlen(rebuilt.prefix + key + suffix):
            report.differ(f"{key}{suffix}: live has {n} fields, rebuilt a different number")
            continue
        report.batch_fields += n if suffix == "" else 0
        if not await _same_hash(live, rebuilt, key + suffix):
            report.differ(f"{key}{suffix}: a field differs")


async def _same_hash(live: Store, rebuilt: Store, key: str) -> bool:
    """Field by field, a page of the live hash at a time against one HMGET of the rebuilt."""
    cursor = 0
    while True:
        cursor, found = await live.redis.hscan(live.prefix + key, cursor, count=1000)
        page = cast(dict[str, str], found)
        if page:
            names = list(page)
            theirs = await rebuilt.redis.hmget(rebuilt.prefix + key, names)
            for name, raw in zip(names, theirs, strict=True):
                if raw is None or json.loads(raw) != json.loads(page[name]):
                    return False
        if cursor == 0:
            return True


async def replay_and_compare(live: Store, scratch: Store) -> Report:
    report = Report()
    await rebuild(live, scratch, report)
    started = time.perf_counter()
    await compare(live, scratch, report)
    report.compare_s = time.perf_counter() - started
    return report


async def drop(store: Store) -> None:
    """Delete every key of a (scratch) namespace."""
    async for keys in _scan(store, "*"):
        await store.redis.unlink(*[store.prefix + k for k in keys])
