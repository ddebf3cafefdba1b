"""The event log of a namespace (a Redis Stream), read a page at a time.

Events are appended only by the Lua scripts, together with the projections
they change; this side reads.
"""

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import cast

import redis.asyncio as aioredis

from msarch.events import Event, EventType
from msarch.storage.keys import Keys

PAGE = 2000
"""The most entries read at once: the log is never loaded whole."""


class EventLog:
    def __init__(self, client: "aioredis.Redis", keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    async def read(self, after: str | None = None, limit: int = 100) -> list[Event]:
        """A page of the log, oldest first, strictly after the given event id."""
        start = f"({after}" if after else "-"
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await self._redis.xrange(self._keys.events, start, "+", count=limit),
        )
        return [_event_of(entry_id, fields) for entry_id, fields in entries]

    async def pages(self, after: str | None = None, page: int = PAGE) -> AsyncIterator[list[Event]]:
        """The whole log after `after`, page by page, until its current end."""
        while events := await self.read(after, page):
            yield events
            after = events[-1].id

    async def last_id(self) -> str | None:
        entries = await self._redis.xrevrange(self._keys.events, "+", "-", count=1)
        return str(entries[0][0]) if entries else None

    async def length(self) -> int:
        """Entries in the log (what benchmarks and tests wait on)."""
        return int(await self._redis.xlen(self._keys.events))


def _event_of(entry_id: str, fields: dict[str, str]) -> Event:
    return Event(
        id=entry_id,
        type=EventType(fields["type"]),
        time=datetime.fromisoformat(fields["time"]),
        message_id=fields["message_id"],
        correlation_id=fields.get("correlation_id") or None,
        payload=json.loads(fields["payload"]),
    )
