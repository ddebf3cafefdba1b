"""Redis: the event log and its projections, each change made in one atomic step.

Split by capability, as eventsourcing splits its recorders:

  keys.py         the key layout, written down once
  event_log.py    EventLog: reading the log (only the scripts append to it)
  key_values.py   KeyValues: roundtrip values, exactly once per message id
  batches.py      Batches: request, stage, commit, fail, read
  projections.py  Projections: bulk reads and writes for replay
  scripts/*.lua   the atomic writes, read once at import

`Store` holds one of each for a namespace; services call its methods, which
hand over to the capability that owns them.
"""

from collections.abc import AsyncIterator, Sequence
from uuid import UUID

import redis.asyncio as aioredis

from msarch.events import Event
from msarch.messages import BatchItem, BatchStatus, KeyValue
from msarch.storage.batches import Batches, BatchState, StageResult
from msarch.storage.event_log import EventLog
from msarch.storage.key_values import IDEMPOTENCY_TTL_S, KeyValues, MessageState, StoredKeyValue
from msarch.storage.keys import Keys
from msarch.storage.projections import BatchHash, Projections

__all__ = [
    "IDEMPOTENCY_TTL_S",
    "BatchHash",
    "BatchState",
    "Batches",
    "EventLog",
    "KeyValues",
    "Keys",
    "MessageState",
    "Projections",
    "StageResult",
    "Store",
    "StoredKeyValue",
]


class Store:
    """The event log and the projections of one namespace in one Redis database."""

    def __init__(self, client: "aioredis.Redis", namespace: str = "") -> None:
        self.redis = client
        """The connection itself: for tests that look at raw keys, not for the services."""
        self.namespace = namespace
        self.keys = Keys(namespace)
        self.events = EventLog(client, self.keys)
        self.key_values = KeyValues(client, self.keys)
        self.batches = Batches(client, self.keys)
        self.projections = Projections(client, self.keys)

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

    def in_namespace(self, namespace: str) -> "Store":
        """The same Redis connection, another namespace (a scratch one for replay or tests)."""
        return Store(self.redis, namespace)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # -- roundtrip (KeyValues) ------------------------------------------------------

    async def store_key_value(
        self, kv: KeyValue, correlation_id: str | None = None
    ) -> StoredKeyValue:
        return await self.key_values.store(kv, correlation_id)

    async def mark_forwarded(self, kv: KeyValue) -> None:
        await self.key_values.mark_forwarded(kv)

    async def get_value(self, key: str) -> str | None:
        return await self.key_values.get(key)

    # -- batches (Batches) ----------------------------------------------------------

    async def request_batch(
        self, batch_id: UUID, size: int, correlation_id: str | None = None
    ) -> None:
        await self.batches.request(batch_id, size, correlation_id)

    async def stage_items(
        self, items: Sequence[BatchItem], correlation_id: str | None = None
    ) -> StageResult:
        return await self.batches.stage(items, correlation_id)

    async def fail_batch(self, batch_id: UUID, status: BatchStatus, detail: str) -> BatchStatus:
        return await self.batches.fail(batch_id, status, detail)

    async def keep_assembling(self, batch_id: UUID) -> bool:
        return await self.batches.keep_assembling(batch_id)

    async def stalled_batches(self, idle_s: float) -> list[UUID]:
        return await self.batches.stalled(idle_s)

    async def batch_state(self, batch_id: UUID) -> BatchState | None:
        return await self.batches.state(batch_id)

    async def list_batches(self, offset: int = 0, limit: int = 50) -> list[str]:
        return await self.batches.committed(offset, limit)

    async def batch_size(self, batch_id: UUID) -> int | None:
        return await self.batches.committed_size(batch_id)

    def iter_batch_values(
        self, batch_id: UUID, offset: int = 0, limit: int | None = None, chunk: int = 1000
    ) -> AsyncIterator[tuple[str, str]]:
        return self.batches.values(batch_id, offset, limit, chunk)

    # -- the event log (EventLog) ---------------------------------------------------

    async def read_events(self, after: str | None = None, limit: int = 100) -> list[Event]:
        return await self.events.read(after, limit)

    async def last_event_id(self) -> str | None:
        return await self.events.last_id()
