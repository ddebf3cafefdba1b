"""Redis: the event log and its projections, each change made in one atomic step.

Layout, all under "{namespace}msarch:":
  events                 the event log (a Redis Stream), the source of truth
  kv:{key}               roundtrip value (projection of KeyValueStored)
  batch:{id}             final batch hash, index -> [key, value] (BatchCommitted)
  batch:{id}:staging     items of a batch being assembled (BatchItemStaged)
  batch:{id}:meta        status, size, stored, detail, timestamps
  batches                sorted index of committed batches, by commit time
  assembling             batches being assembled, by last activity: a staged item or
                         the publisher's keep-alive (for timeouts)
  msg:{message id}       idempotency marker: state ("stored", then "forwarded") and event id

Every write is a Lua script: the event is appended and the projections are
updated together, or nothing is. A message seen before changes nothing.
"""

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from msarch.events import Event, EventType
from msarch.messages import BatchItem, BatchStatus, KeyValue

IDEMPOTENCY_TTL_S = 7 * 24 * 3600

_FINAL = "Done Invalid TimeoutExceeded DatabaseOperationFailed"

# KEYS: kv, msg marker, events. ARGV: value, message id, correlation id, time, payload, ttl
# Returns {'new' | 'stored' | 'forwarded', event id}.
_STORE_KV = """
local seen = redis.call('HMGET', KEYS[2], 'state', 'event')
if seen[1] then return seen end
redis.call('SET', KEYS[1], ARGV[1])
local event = redis.call('XADD', KEYS[3], '*', 'type', 'KeyValueStored', 'message_id', ARGV[2],
  'correlation_id', ARGV[3], 'time', ARGV[4], 'payload', ARGV[5])
redis.call('HSET', KEYS[2], 'state', 'stored', 'event', event)
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {'new', event}
"""

# Fails a batch unless it is already final.
# KEYS: meta, staging, assembling, events. ARGV: batch id, status, detail, now ms, time
_FAIL_BATCH = """
local status = redis.call('HGET', KEYS[1], 'status')
if status and string.find(' __FINAL__ ', ' ' .. status .. ' ', 1, true) then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return status
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'detail', ARGV[3], 'updated_at', ARGV[4],
  'stored', 0)
redis.call('XADD', KEYS[4], '*', 'type', 'BatchFailed', 'message_id', ARGV[1] .. ':' .. ARGV[2],
  'correlation_id', '', 'time', ARGV[5], 'payload',
  cjson.encode({batch_id = ARGV[1], status = ARGV[2], detail = ARGV[3]}))
return ARGV[2]
""".replace("__FINAL__", _FINAL)

# A live publisher keeps its batch from being swept as stalled, unless it is final.
# KEYS: meta, assembling. ARGV: batch id, now ms
_KEEP_ASSEMBLING = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or string.find(' __FINAL__ ', ' ' .. status .. ' ', 1, true) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
""".replace("__FINAL__", _FINAL)

# KEYS: meta, events. ARGV: batch id, size, now ms, time, correlation id
_REQUEST_BATCH = """
if redis.call('HSETNX', KEYS[1], 'status', 'PendingConsume') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'size', ARGV[2], 'created_at', ARGV[3])
redis.call('XADD', KEYS[2], '*', 'type', 'BatchRequested', 'message_id', ARGV[1] .. ':Requested',
  'correlation_id', ARGV[5], 'time', ARGV[4], 'payload',
  cjson.encode({batch_id = ARGV[1], size = tonumber(ARGV[2])}))
return 1
"""

# Stages items of one batch; the last missing item commits the batch.
# KEYS: meta, staging, final, batches, assembling, events
# ARGV: batch id, size, now ms, time, correlation id, then index/key/value triples.
# Returns {status, outcome, stored, detail}; rules as in msarch.batch_rules.
_STAGE_ITEMS = """
local meta, staging, final, batches, assembling, events =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local batch_id, size, now, at, cid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local status = redis.call('HGET', meta, 'status')
if status and string.find(' __FINAL__ ', ' ' .. status .. ' ', 1, true) then
  return {status, 'ignored', tonumber(redis.call('HGET', meta, 'stored') or 0),
    redis.call('HGET', meta, 'detail') or ''}
end
local function invalid(detail)
  redis.call('DEL', staging)
  redis.call('ZREM', assembling, batch_id)
  redis.call('HSET', meta, 'status', 'Invalid', 'detail', detail, 'updated_at', now, 'stored', 0)
  redis.call('XADD', events, '*', 'type', 'BatchFailed', 'message_id', batch_id .. ':Invalid',
    'correlation_id', cid, 'time', at, 'payload',
    cjson.encode({batch_id = batch_id, status = 'Invalid', detail = detail}))
  return {'Invalid', 'invalidated', 0, detail}
end
local known = tonumber(redis.call('HGET', meta, 'size'))
if size < 1 then return invalid('size ' .. ARGV[2] .. ' is not positive') end
if known and known ~= size then
  return invalid('an item says size ' .. size .. ', the batch has size ' .. known)
end
redis.call('HSET', meta, 'status', 'PendingDatabase', 'size', size)
redis.call('HSETNX', meta, 'created_at', now)
local outcome = 'duplicate'
for i = 6, #ARGV, 3 do
  -- Items after the completing one are ignored, as when they come one by one.
  if redis.call('HLEN', staging) == size then break end
  local index = tonumber(ARGV[i])
  if index < 0 or index >= size then
    return invalid('index ' .. ARGV[i] .. ' is outside 0..' .. (size - 1))
  end
  local item = cjson.encode({ARGV[i + 1], ARGV[i + 2]})
  if redis.call('HSETNX', staging, ARGV[i], item) == 1 then
    outcome = 'staged'
    redis.call('XADD', events, '*', 'type', 'BatchItemStaged',
      'message_id', batch_id .. ':' .. ARGV[i], 'correlation_id', cid, 'time', at, 'payload',
      cjson.encode({batch_id = batch_id, index = index, size = size,
        key = ARGV[i + 1], value = ARGV[i + 2]}))
  end
end
local stored = redis.call('HLEN', staging)
redis.call('HSET', meta, 'stored', stored, 'updated_at', now)
if stored == size then
  redis.call('RENAME', staging, final)
  redis.call('ZREM', assembling, batch_id)
  redis.call('ZADD', batches, now, batch_id)
  redis.call('HSET', meta, 'status', 'Done', 'committed_at', now)
  redis.call('XADD', events, '*', 'type', 'BatchCommitted', 'message_id', batch_id .. ':Done',
    'correlation_id', cid, 'time', at, 'payload',
    cjson.encode({batch_id = batch_id, size = size, committed_at = tonumber(now)}))
  return {'Done', 'completed', stored, ''}
end
redis.call('ZADD', assembling, now, batch_id)
return {'PendingDatabase', outcome, stored, ''}
""".replace("__FINAL__", _FINAL)


@dataclass(frozen=True)
class StageResult:
    status: BatchStatus
    outcome: str
    """staged, duplicate, completed, invalidated or ignored (see batch_rules.Outcome)."""
    stored: int
    detail: str | None


@dataclass(frozen=True)
class BatchState:
    batch_id: UUID
    status: BatchStatus
    size: int | None
    stored: int
    detail: str | None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso_now() -> str:
    return datetime.now(UTC).isoformat()


class Store:
    """The event log and the projections of one namespace in one Redis database."""

    def __init__(self, client: "aioredis.Redis", namespace: str = "") -> None:
        self.redis = client
        self.prefix = f"{namespace}msarch:"
        self._store_kv: AsyncScript = client.register_script(_STORE_KV)
        self._stage_items: AsyncScript = client.register_script(_STAGE_ITEMS)
        self._fail_batch: AsyncScript = client.register_script(_FAIL_BATCH)
        self._request_batch: AsyncScript = client.register_script(_REQUEST_BATCH)
        self._keep_assembling: AsyncScript = client.register_script(_KEEP_ASSEMBLING)

    @classmethod
    def from_url(cls, url: str, namespace: str = "", max_connections: int = 64) -> "Store":
        # Blocking: a handler waits for a free connection instead of failing as if
        # Redis were down (every in-flight message may want one at once).
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=10,
            max_connections=max_connections,
            timeout=30,
        )
        return cls(aioredis.Redis.from_pool(pool), namespace)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # -- roundtrip --------------------------------------------------------------

    async def store_key_value(
        self, kv: KeyValue, correlation_id: str | None = None
    ) -> tuple[str, str]:
        """Append KeyValueStored and set kv:{key}, once per message id.

        Returns ('new', event id), or for a message seen before its state
        ('stored' or 'forwarded') and the event id it got the first time.
        """
        message_id = str(kv.id)
        result = await self._store_kv(
            keys=[self.key("kv", kv.key), self.key("msg", message_id), self.key("events")],
            args=[
                kv.value,
                message_id,
                correlation_id or "",
                _iso_now(),
                kv.model_dump_json(),
                IDEMPOTENCY_TTL_S,
            ],
        )
        state, event_id = result
        return str(state), str(event_id)

    async def mark_forwarded(self, kv: KeyValue) -> None:
        await self.redis.hset(self.key("msg", str(kv.id)), "state", "forwarded")

    async def get_value(self, key: str) -> str | None:
        return cast(str | None, await self.redis.get(self.key("kv", key)))

    # -- batches ----------------------------------------------------------------

    async def stage_items(
        self, items: Sequence[BatchItem], correlation_id: str | None = None
    ) -> StageResult:
        """Stage items of ONE batch atomically; the last missing one commits it."""
        first = items[0]
        bid = str(first.batch_id)
        args: list[Any] = [bid, first.size, _now_ms(), _iso_now(), correlation_id or ""]
        for item in items:
            if item.batch_id != first.batch_id or item.size != first.size:
                raise ValueError("stage_items takes items of one batch and one size")
            args += [item.index, item.key, item.value]
        status, outcome, stored, detail = await self._stage_items(
            keys=[
                self.key("batch", bid, "meta"),
                self.key("batch", bid, "staging"),
                self.key("batch", bid),
                self.key("batches"),
                self.key("assembling"),
                self.key("events"),
            ],
            args=args,
        )
        return StageResult(BatchStatus(status), outcome, int(stored), detail or None)

    async def fail_batch(self, batch_id: UUID, status: BatchStatus, detail: str) -> BatchStatus:
        """Make a batch final with a failure, unless it already is; returns its final status."""
        bid = str(batch_id)
        result = await self._fail_batch(
            keys=[
                self.key("batch", bid, "meta"),
                self.key("batch", bid, "staging"),
                self.key("assembling"),
                self.key("events"),
            ],
            args=[bid, status.value, detail, _now_ms(), _iso_now()],
        )
        return BatchStatus(result)

    async def keep_assembling(self, batch_id: UUID) -> bool:
        """The batch's publisher is alive: it is not stalled (False once it is final)."""
        bid = str(batch_id)
        kept = await self._keep_assembling(
            keys=[self.key("batch", bid, "meta"), self.key("assembling")], args=[bid, _now_ms()]
        )
        return bool(kept)

    async def stalled_batches(self, idle_s: float) -> list[UUID]:
        """Batches being assembled that have had no new item for idle_s seconds."""
        cutoff = _now_ms() - int(idle_s * 1000)
        ids = await self.redis.zrangebyscore(self.key("assembling"), "-inf", cutoff, 0, 1000)
        return [UUID(str(i)) for i in ids]

    async def batch_state(self, batch_id: UUID) -> BatchState | None:
        meta = cast(
            dict[str, str], await self.redis.hgetall(self.key("batch", str(batch_id), "meta"))
        )
        if not meta:
            return None
        return BatchState(
            batch_id=batch_id,
            status=BatchStatus(meta.get("status", "None")),
            size=int(meta["size"]) if "size" in meta else None,
            stored=int(meta.get("stored", 0)),
            detail=meta.get("detail") or None,
        )

    async def request_batch(
        self, batch_id: UUID, size: int, correlation_id: str | None = None
    ) -> None:
        """Append BatchRequested: the batch exists, its items are on their way."""
        bid = str(batch_id)
        await self._request_batch(
            keys=[self.key("batch", bid, "meta"), self.key("events")],
            args=[bid, size, _now_ms(), _iso_now(), correlation_id or ""],
        )

    async def list_batches(self, offset: int = 0, limit: int = 50) -> list[str]:
        """Committed batch ids, newest first, from the index (never a KEYS scan)."""
        ids = await self.redis.zrevrange(self.key("batches"), offset, offset + limit - 1)
        return [str(i) for i in ids]

    async def batch_size(self, batch_id: UUID) -> int | None:
        """Fields in the final hash, or None if the batch was never committed."""
        final = self.key("batch", str(batch_id))
        if not await self.redis.exists(final):
            return None
        return int(await self.redis.hlen(final))

    async def iter_batch_values(
        self, batch_id: UUID, offset: int = 0, limit: int | None = None, chunk: int = 1000
    ) -> AsyncIterator[tuple[str, str]]:
        """(key, value) in item order, read in chunks so memory stays flat."""
        final = self.key("batch", str(batch_id))
        size = await self.redis.hlen(final)
        end = size if limit is None else min(size, offset + limit)
        for start in range(offset, end, chunk):
            fields = [str(i) for i in range(start, min(start + chunk, end))]
            for raw in await self.redis.hmget(final, fields):
                if raw is not None:
                    key, value = json.loads(raw)
                    yield key, value

    # -- the event log ------------------------------------------------------------

    async def read_events(self, after: str | None = None, limit: int = 100) -> list[Event]:
        """A page of the log, oldest first, strictly after the given event id."""
        start = f"({after}" if after else "-"
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await self.redis.xrange(self.key("events"), start, "+", count=limit),
        )
        return [_event_of(entry_id, fields) for entry_id, fields in entries]

    async def last_event_id(self) -> str | None:
        entries = await self.redis.xrevrange(self.key("events"), "+", "-", count=1)
        return str(entries[0][0]) if entries else None


def _event_of(entry_id: str, fields: dict[str, str]) -> Event:
    return Event(
        id=entry_id,
        type=EventType(fields["type"]),
        time=datetime.fromisoformat(fields["time"]),
        message_id=fields["message_id"],
        correlation_id=fields.get("correlation_id") or None,
        payload=json.loads(fields["payload"]),
    )
