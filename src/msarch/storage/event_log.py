"""The event log of a namespace (a Redis Stream), read a page at a time.

Events are appended only by the Lua scripts, together with the projections
they change; this side reads.
"""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from msarch.events import Event, EventType, event_position
from msarch.storage import scripts
from msarch.storage.keys import Keys
from msarch.upcasting import CURRENT_VERSION, upcast

PAGE = 2000
"""The most entries read at once: the log is never loaded whole."""


@dataclass(frozen=True)
class LogGap:
    """Events after `after` that are no longer in the log: trimmed (XTRIM) or deleted."""

    after: str
    removed_up_to: str
    """The newest id removed from the log, trimmed or deleted."""
    oldest_kept: str | None
    """The first event still in the log; None when none is."""
    snapshot_event_id: str | None = None
    """The last event the latest snapshot holds (`msarch snapshot`), if there is one."""

    @property
    def detail(self) -> str:
        kept = f"the oldest kept is {self.oldest_kept}" if self.oldest_kept else "none is kept"
        state = (
            f"the latest snapshot holds the state as of {self.snapshot_event_id}"
            if self.snapshot_event_id
            else "the projections hold what they changed"
        )
        return (
            f"events after {self.after} are gone from the log (removed up to "
            f"{self.removed_up_to}); {kept}; {state}. Read on from the oldest kept event."
        )


class EventLog:
    def __init__(self, client: "aioredis.Redis", keys: Keys, service: str = "") -> None:
        self._redis = client
        self._keys = keys
        self._trim = scripts.register(client, "trim_events", service)

    async def read(
        self, after: str | None = None, limit: int = 100, until: str | None = None
    ) -> list[Event]:
        """A page of the log, oldest first, strictly after `after` and up to `until`."""
        start = f"({after}" if after else "-"
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await self._redis.xrange(self._keys.events, start, until or "+", count=limit),
        )
        return [_event_of(entry_id, fields) for entry_id, fields in entries]

    async def pages(
        self, after: str | None = None, page: int = PAGE, until: str | None = None
    ) -> AsyncIterator[list[Event]]:
        """The log after `after`, page by page, up to `until` or else its current end."""
        while events := await self.read(after, page, until):
            yield events
            after = events[-1].id

    async def trim_before(self, first_kept: str) -> tuple[int, str | None]:
        """Remove every event before `first_kept`; (how many, the newest id removed)."""
        keys = [self._keys.events, self._keys.events_trimmed]
        removed, newest = await self._trim(keys, [first_kept])
        return int(removed), newest or None

    async def gap_after(self, after: str) -> LogGap | None:
        """Whether a reader resuming after `after` would miss removed events: trimmed ones
        (trim_before records the newest) or deleted ones (Redis records the newest XDEL
        removed). A trim by hand (XTRIM) records nothing and so is not seen."""
        async with self._redis.pipeline(transaction=True) as reads:
            reads.xinfo_stream(self._keys.events)
            reads.get(self._keys.events_trimmed)
            reads.hget(self._keys.snapshot, "event_id")
            info, trimmed, snapshot = await reads.execute(raise_on_error=False)
        if isinstance(info, ResponseError):  # no log yet: nothing was removed from it
            return None
        deleted = str(info.get("max-deleted-entry-id") or "0-0")
        removed = max(deleted, trimmed or "0-0", key=event_position)
        if event_position(removed) <= event_position(after):
            return None
        first = info.get("first-entry")
        return LogGap(after, removed, str(first[0]) if first else None, snapshot or None)

    async def last_id(self) -> str | None:
        entries = await self._redis.xrevrange(self._keys.events, "+", "-", count=1)
        return str(entries[0][0]) if entries else None

    async def length(self) -> int:
        """Entries in the log (what benchmarks and tests wait on)."""
        return int(await self._redis.xlen(self._keys.events))


def _event_of(entry_id: str, fields: dict[str, str]) -> Event:
    kind = EventType(fields["type"])
    written_at = int(fields.get("version") or 1)  # version 1 entries carry none
    return Event(
        id=entry_id,
        type=kind,
        version=max(written_at, CURRENT_VERSION),
        time=datetime.fromisoformat(fields["time"]),
        message_id=fields["message_id"],
        correlation_id=fields.get("correlation_id") or None,
        trace_id=fields.get("trace_id") or None,
        payload=upcast(kind, written_at, json.loads(fields["payload"])),
    )
