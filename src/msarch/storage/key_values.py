"""Roundtrip key/values: KeyValueStored and kv:{key}, exactly once per message id.

The msg:{id} marker makes a redelivered message append nothing; its state
tells the store whether the first delivery's forward was recorded.
"""

from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple, cast

import redis.asyncio as aioredis

from msarch.messages import KeyValue
from msarch.storage import scripts
from msarch.storage.clock import iso_now
from msarch.storage.keys import Keys
from msarch.storage.replication import DurableWrites

IDEMPOTENCY_TTL_S = 7 * 24 * 3600


class MessageState(StrEnum):
    """What storing a roundtrip message found; the last two are kept in msg:{id}."""

    NEW = "new"
    """First delivery: the event was appended now."""
    STORED = "stored"
    """Seen before and logged, but its forward was not recorded: forward again."""
    FORWARDED = "forwarded"
    """Seen before, logged and forwarded: nothing left to do."""


class StoredKeyValue(NamedTuple):
    state: MessageState
    event_id: str
    """The event the message got, the first time it was stored."""


class KeyValues:
    def __init__(
        self, client: "aioredis.Redis", keys: Keys, writes: DurableWrites, service: str = ""
    ) -> None:
        self._redis = client
        self._keys = keys
        self._writes = writes
        self._store = scripts.register(client, "store_key_value", service)

    async def store(
        self, kv: KeyValue, correlation_id: str | None = None, trace_id: str | None = None
    ) -> StoredKeyValue:
        """Append KeyValueStored and set kv:{key}, once per message id; the event keeps the
        trace of the request, so a frame replayed from the log names it too."""
        message_id = str(kv.id)
        keys = self._keys
        state, event_id = await self._writes.script(
            self._store,
            keys=[keys.kv(kv.key), keys.message(message_id), keys.events],
            args=[
                kv.value,
                message_id,
                correlation_id or "",
                iso_now(),
                kv.model_dump_json(),
                IDEMPOTENCY_TTL_S,
                trace_id or "",
            ],
        )
        return StoredKeyValue(MessageState(state), str(event_id))

    async def mark_forwarded(self, kv: KeyValue) -> None:
        await self._writes.command(
            "HSET", self._keys.message(str(kv.id)), "state", MessageState.FORWARDED.value
        )

    async def get(self, key: str) -> str | None:
        return cast(str | None, await self._redis.get(self._keys.kv(key)))

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """Values of several keys in one round trip, None where a key has none."""
        if not keys:
            return []
        return cast(list[str | None], await self._redis.mget([self._keys.kv(k) for k in keys]))
