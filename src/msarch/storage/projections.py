"""The projections of a namespace read and written in bulk: what replay needs.

Replay writes into an empty scratch namespace with plain pipelined commands
(no Lua, no events: the events are the input), then compares every
projection with the live one. Everything is read in chunks, never whole.
"""

import json
from collections.abc import AsyncIterator, Sequence
from enum import StrEnum
from typing import cast

import redis.asyncio as aioredis

from msarch.events import Event, EventType
from msarch.messages import BatchStatus
from msarch.storage.keys import BATCH_META_PATTERN, KV_PATTERN, Keys

SCAN_CHUNK = 500


class BatchHash(StrEnum):
    """The two hashes of a batch's items: committed, or still being assembled."""

    FINAL = "final"
    STAGING = "staging"


class ProjectionWriter:
    """Applies events to the projections in one pipeline, executed once per page."""

    def __init__(self, client: "aioredis.Redis", keys: Keys) -> None:
        self._pipe = client.pipeline(transaction=False)
        self._keys = keys

    def apply(self, event: Event) -> None:
        """The projection of one event; the same changes the Lua script made with it."""
        p, keys, pipe = event.payload, self._keys, self._pipe
        if event.type is EventType.KeyValueStored:
            pipe.set(keys.kv(p["key"]), p["value"])
            return
        bid = str(p["batch_id"])
        meta, staging = keys.batch_meta(bid), keys.batch_staging(bid)
        if event.type is EventType.BatchRequested:
            pipe.hsetnx(meta, "status", BatchStatus.PendingConsume.value)
            pipe.hset(meta, "size", p["size"])
        elif event.type is EventType.BatchItemStaged:
            pipe.hset(staging, str(p["index"]), json.dumps([p["key"], p["value"]]))
            pending = BatchStatus.PendingDatabase.value
            pipe.hset(meta, mapping={"status": pending, "size": p["size"]})
        elif event.type is EventType.BatchCommitted:
            pipe.rename(staging, keys.batch(bid))
            pipe.hset(
                meta,
                mapping={"status": BatchStatus.Done.value, "size": p["size"], "stored": p["size"]},
            )
            pipe.zadd(keys.batches, {bid: p["committed_at"]})
        elif event.type is EventType.BatchFailed:
            pipe.delete(staging)
            pipe.hset(
                meta,
                mapping={"status": p["status"], "detail": p["detail"] or "", "stored": 0},
            )

    async def execute(self) -> list[Exception]:
        """Send what was applied; the commands Redis refused (a log that does not replay)."""
        results = await self._pipe.execute(raise_on_error=False)
        return [r for r in results if isinstance(r, Exception)]


class Projections:
    def __init__(self, client: "aioredis.Redis", keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    def writer(self) -> ProjectionWriter:
        return ProjectionWriter(self._redis, self._keys)

    async def kv_keys(self) -> AsyncIterator[list[str]]:
        """Every roundtrip key that has a value, in chunks (SCAN: slow, for replay only)."""
        async for chunk in self._scan(KV_PATTERN):
            yield [self._keys.kv_name(k) for k in chunk]

    async def kv_count(self) -> int:
        return sum([len(chunk) async for chunk in self._scan(KV_PATTERN)])

    async def batch_ids(self) -> AsyncIterator[list[str]]:
        """Every batch that has a meta hash (requested, assembling or final), in chunks."""
        async for chunk in self._scan(BATCH_META_PATTERN):
            yield [self._keys.batch_id_of_meta(k) for k in chunk]

    async def batch_index(self) -> list[tuple[str, float]]:
        """The committed-batch index with its scores (commit times), oldest first."""
        entries = cast(
            list[tuple[str, float]],
            await self._redis.zrange(self._keys.batches, 0, -1, withscores=True),
        )
        return [(str(member), float(score)) for member, score in entries]

    async def batch_meta(self, batch_id: str, fields: Sequence[str]) -> list[str | None]:
        return cast(
            list[str | None], await self._redis.hmget(self._keys.batch_meta(batch_id), fields)
        )

    def name(self, batch_id: str, which: BatchHash) -> str:
        """The hash's key without the namespace, for reports."""
        return self._keys.relative(self._hash_key(batch_id, which))

    async def hash_length(self, batch_id: str, which: BatchHash) -> int:
        return int(await self._redis.hlen(self._hash_key(batch_id, which)))

    async def hash_pages(
        self, batch_id: str, which: BatchHash, count: int = 1000
    ) -> AsyncIterator[dict[str, str]]:
        """The hash's fields, about `count` at a time (HSCAN)."""
        key, cursor = self._hash_key(batch_id, which), 0
        while True:
            cursor, found = await self._redis.hscan(key, cursor, count=count)
            if found:
                yield cast(dict[str, str], found)
            if cursor == 0:
                return

    async def hash_fields(
        self, batch_id: str, which: BatchHash, names: Sequence[str]
    ) -> list[str | None]:
        return cast(
            list[str | None], await self._redis.hmget(self._hash_key(batch_id, which), names)
        )

    async def copy_into(self, target: "Projections") -> int:
        """Copy every key of this namespace into the empty namespace of `target` (COPY, in
        Redis: nothing passes through here); how many."""
        copied = 0
        async for chunk in self._scan("*"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in chunk:
                    pipe.copy(key, target._keys.prefix + self._keys.relative(key), replace=True)
                await pipe.execute()
            copied += len(chunk)
        return copied

    async def drop(self) -> None:
        """Delete every key of this namespace (a scratch one: never the live namespace)."""
        async for chunk in self._scan("*"):
            await self._redis.unlink(*chunk)

    def _hash_key(self, batch_id: str, which: BatchHash) -> str:
        if which is BatchHash.STAGING:
            return self._keys.batch_staging(batch_id)
        return self._keys.batch(batch_id)

    async def _scan(self, pattern: str) -> AsyncIterator[list[str]]:
        """Full keys of this namespace matching `pattern`, in chunks."""
        chunk: list[str] = []
        match = self._keys.matching(pattern)
        async for key in self._redis.scan_iter(match=match, count=1000):
            chunk.append(str(key))
            if len(chunk) >= SCAN_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
