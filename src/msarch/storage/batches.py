"""Batches in Redis: requested, staged item by item, committed or failed, atomically.

The rules are msarch.batch_rules; the scripts apply them inside Redis so that
any number of store instances can stage items of one batch at once.
"""

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import redis.asyncio as aioredis

from msarch.batch_rules import Outcome
from msarch.messages import BatchItem, BatchStatus
from msarch.storage import scripts
from msarch.storage.clock import iso_now, now_ms
from msarch.storage.keys import Keys
from msarch.storage.replication import DurableWrites

FINAL_STATUSES = " ".join(status.value for status in BatchStatus if status.is_final)
"""Passed to the scripts, which cannot import BatchStatus."""


@dataclass(frozen=True)
class StageResult:
    status: BatchStatus
    outcome: Outcome
    stored: int
    detail: str | None


@dataclass(frozen=True)
class BatchState:
    batch_id: UUID
    status: BatchStatus
    size: int | None
    stored: int
    detail: str | None


class Batches:
    def __init__(
        self, client: "aioredis.Redis", keys: Keys, writes: DurableWrites, service: str = ""
    ) -> None:
        self._redis = client
        self._keys = keys
        self._writes = writes
        self._request = scripts.register(client, "request_batch", service)
        self._stage = scripts.register(client, "stage_items", service)
        self._fail = scripts.register(client, "fail_batch", service)
        self._keep = scripts.register(client, "keep_assembling", service)

    async def request(self, batch_id: UUID, size: int, correlation_id: str | None = None) -> None:
        """Append BatchRequested: the batch exists, its items are on their way."""
        bid = str(batch_id)
        await self._writes.script(
            self._request,
            keys=[self._keys.batch_meta(bid), self._keys.events],
            args=[bid, size, now_ms(), iso_now(), correlation_id or ""],
        )

    async def stage(
        self, items: Sequence[BatchItem], correlation_id: str | None = None
    ) -> StageResult:
        """Stage items of ONE batch atomically; the last missing one commits it."""
        first = items[0]
        bid = str(first.batch_id)
        args: list[Any] = [bid, first.size, now_ms(), iso_now(), correlation_id or ""]
        args.append(FINAL_STATUSES)
        for item in items:
            if item.batch_id != first.batch_id or item.size != first.size:
                raise ValueError("stage_items takes items of one batch and one size")
            args += [item.index, item.key, item.value]
        keys = self._keys
        status, outcome, stored, detail = await self._writes.script(
            self._stage,
            keys=[
                keys.batch_meta(bid),
                keys.batch_staging(bid),
                keys.batch(bid),
                keys.batches,
                keys.assembling,
                keys.events,
            ],
            args=args,
        )
        return StageResult(BatchStatus(status), Outcome(outcome), int(stored), detail or None)

    async def fail(self, batch_id: UUID, status: BatchStatus, detail: str) -> BatchStatus:
        """Make a batch final with a failure, unless it already is; returns its final status."""
        bid = str(batch_id)
        keys = self._keys
        result = await self._writes.script(
            self._fail,
            keys=[keys.batch_meta(bid), keys.batch_staging(bid), keys.assembling, keys.events],
            args=[bid, status.value, detail, now_ms(), iso_now(), FINAL_STATUSES],
        )
        return BatchStatus(result)

    async def keep_assembling(self, batch_id: UUID) -> bool:
        """The batch's publisher is alive: it is not stalled (False once it is final)."""
        bid = str(batch_id)
        # Nothing is acknowledged after a keep-alive: it does not wait for replicas.
        kept = await self._keep(
            [self._keys.batch_meta(bid), self._keys.assembling], [bid, now_ms(), FINAL_STATUSES]
        )
        return bool(kept)

    async def stalled(self, idle_s: float) -> list[UUID]:
        """Batches being assembled that have had no new item for idle_s seconds."""
        cutoff = now_ms() - int(idle_s * 1000)
        ids = await self._redis.zrangebyscore(self._keys.assembling, "-inf", cutoff, 0, 1000)
        return [UUID(str(i)) for i in ids]

    async def state(self, batch_id: UUID) -> BatchState | None:
        meta = cast(dict[str, str], await self._redis.hgetall(self._keys.batch_meta(batch_id)))
        if not meta:
            return None
        return BatchState(
            batch_id=batch_id,
            status=BatchStatus(meta.get("status", "None")),
            size=int(meta["size"]) if "size" in meta else None,
            stored=int(meta.get("stored", 0)),
            detail=meta.get("detail") or None,
        )

    async def committed(self, offset: int = 0, limit: int = 50) -> list[str]:
        """Committed batch ids, newest first, from the index (never a KEYS scan)."""
        ids = await self._redis.zrevrange(self._keys.batches, offset, offset + limit - 1)
        return [str(i) for i in ids]

    async def committed_size(self, batch_id: UUID) -> int | None:
        """Fields in the final hash, or None if the batch was never committed."""
        final = self._keys.batch(batch_id)
        if not await self._redis.exists(final):
            return None
        return int(await self._redis.hlen(final))

    async def values(
        self, batch_id: UUID, offset: int = 0, limit: int | None = None, chunk: int = 1000
    ) -> AsyncIterator[tuple[str, str]]:
        """(key, value) of a committed batch in item order, in chunks so memory stays flat."""
        final = self._keys.batch(batch_id)
        size = await self._redis.hlen(final)
        end = size if limit is None else min(size, offset + limit)
        for start in range(offset, end, chunk):
            fields = [str(i) for i in range(start, min(start + chunk, end))]
            for raw in await self._redis.hmget(final, fields):
                if raw is not None:
                    key, value = json.loads(raw)
                    yield key, value
