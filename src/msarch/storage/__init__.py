"""Redis: the event log and its projections, each change made in one atomic step.

Split by capability, as eventsourcing splits its recorders:

  keys.py         the key layout, written down once
  event_log.py    EventLog: reading the log (only the scripts append to it)
  key_values.py   KeyValues: roundtrip values, exactly once per message id
  batches.py      Batches: request, stage, commit, fail, read
  projections.py  Projections: bulk reads and writes for replay
  replication.py  DurableWrites: a write, then WAIT for the replicas, before an ack
  scripts/*.lua   the atomic writes, read once at import

`Store` holds one of each for a namespace; services call its methods, which
hand over to the capability that owns them. `Store.from_settings` connects as
MSARCH_REDIS_* say: to MSARCH_REDIS_URL, or to the primary Sentinel names.
"""

from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel

from msarch.events import Event
from msarch.messages import BatchItem, BatchStatus, KeyValue
from msarch.settings import Settings
from msarch.storage.batches import Batches, BatchState, StageResult
from msarch.storage.event_log import EventLog, LogGap
from msarch.storage.key_values import IDEMPOTENCY_TTL_S, KeyValues, MessageState, StoredKeyValue
from msarch.storage.keys import Keys
from msarch.storage.projections import BatchHash, Projections
from msarch.storage.replication import NO_WAIT, DurableWrites, NotReplicatedError, Replication

__all__ = [
    "IDEMPOTENCY_TTL_S",
    "BatchHash",
    "BatchState",
    "Batches",
    "EventLog",
    "KeyValues",
    "Keys",
    "LogGap",
    "MessageState",
    "NotReplicatedError",
    "Projections",
    "Replication",
    "StageResult",
    "Store",
    "StoredKeyValue",
]


class Store:
    """The event log and the projections of one namespace in one Redis database."""

    def __init__(
        self,
        client: "aioredis.Redis",
        namespace: str = "",
        replication: Replication = NO_WAIT,
        *,
        sentinel: Sentinel | None = None,
        service: str = "",
    ) -> None:
        self.redis = client
        """The connection itself: for tests that look at raw keys, not for the services."""
        self.namespace = namespace
        self.replication = replication
        self.service = service
        """The service this store works for: the `service` label of its script timings."""
        self._sentinel = sentinel
        self.keys = Keys(namespace)
        writes = DurableWrites(client, replication, self.keys.replication_mark)
        self.events = EventLog(client, self.keys, service)
        self.key_values = KeyValues(client, self.keys, writes, service)
        self.batches = Batches(client, self.keys, writes, service)
        self.projections = Projections(client, self.keys)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        max_connections: int = 64,
        namespace: str | None = None,
        *,
        service: str = "",
    ) -> "Store":
        """The Store a service uses: through Sentinel when MSARCH_REDIS_SENTINELS is set (the
        client then follows a failover by itself), else at MSARCH_REDIS_URL; its writes wait
        for MSARCH_REDIS_WAIT_REPLICAS replicas. `namespace` overrides MSARCH_NAMESPACE;
        `service` names the service it works for in /metrics."""
        namespace = settings.namespace if namespace is None else namespace
        replication = Replication(settings.wait_replicas, settings.redis_wait_timeout_ms)
        # A WAIT may take its whole timeout before the answer comes.
        options = _client_options(max_connections, 5 + replication.timeout_ms / 1000)
        if not settings.sentinels:
            client = _client(settings.redis_url, options)
            return cls(client, namespace, replication, service=service)
        # The URL gives only the database and the credentials; Sentinel names the host.
        url = parse_url(settings.redis_url)
        credentials: dict[str, Any] = {k: v for k, v in url.items() if k in _CREDENTIALS}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            settings.sentinels, sentinel_kwargs={"socket_timeout": 2, "socket_connect_timeout": 2}
        )
        # redis-py has no blocking Sentinel pool: past max_connections a call fails with
        # MaxConnectionsError, a ConnectionError, which the store retries like an outage.
        client = sentinel.master_for(settings.redis_master, **options, **credentials)
        return cls(client, namespace, replication, sentinel=sentinel, service=service)

    @classmethod
    def from_url(cls, url: str, namespace: str = "", max_connections: int = 64) -> "Store":
        """A Store at a raw URL with no replicas to wait for (tests, one-off tools)."""
        return cls(_client(url, _client_options(max_connections, socket_timeout=5)), namespace)

    def in_namespace(self, namespace: str) -> "Store":
        """The same Redis connection, another namespace (a scratch one for replay or tests)."""
        return Store(self.redis, namespace, self.replication, service=self.service)

    async def close(self) -> None:
        await self.redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # -- roundtrip (KeyValues) ------------------------------------------------------

    async def store_key_value(
        self, kv: KeyValue, correlation_id: str | None = None, trace_id: str | None = None
    ) -> StoredKeyValue:
        return await self.key_values.store(kv, correlation_id, trace_id)

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

    async def gap_after(self, after: str) -> LogGap | None:
        return await self.events.gap_after(after)

    async def trim_events_before(self, first_kept: str) -> tuple[int, str | None]:
        return await self.events.trim_before(first_kept)

    async def last_event_id(self) -> str | None:
        return await self.events.last_id()


_CREDENTIALS = ("db", "username", "password")


def _client_options(max_connections: int, socket_timeout: float) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 2,
        "health_check_interval": 10,
        "max_connections": max_connections,
    }


def _client(url: str, options: dict[str, Any]) -> "aioredis.Redis":
    # Blocking: a handler waits for a free connection instead of failing as if Redis were
    # down (every in-flight message may want one at once).
    pool = aioredis.BlockingConnectionPool.from_url(url, timeout=30, **options)
    return aioredis.Redis.from_pool(pool)
