"""The events: every fact the system accepted, in the order it accepted them.

The event log is a Redis Stream; kv, batch hashes, batch meta and the batch
index are projections of it (see README, "Event model").
"""

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class EventType(StrEnum):
    KeyValueStored = "KeyValueStored"
    """A roundtrip key/value was stored (projection: kv:{key})."""
    BatchRequested = "BatchRequested"
    """A batch was created and its items are on their way (projection: batch meta)."""
    BatchItemStaged = "BatchItemStaged"
    """An item of a batch arrived for the first time (projection: staging)."""
    BatchCommitted = "BatchCommitted"
    """A batch was complete and written as one hash (batch:{id}, meta, index)."""
    BatchFailed = "BatchFailed"
    """A batch ended without data: Invalid, TimeoutExceeded or DatabaseOperationFailed."""


_EVENT_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_MAX_PART = 2**64 - 1


def is_event_id(text: str) -> bool:
    """Whether `text` is a stream entry id Redis takes: two parts of at most 64 bits each."""
    match = _EVENT_ID.fullmatch(text)
    return match is not None and all(int(part) <= _MAX_PART for part in match.groups())


def event_position(event_id: str) -> tuple[int, int]:
    """An event id as the pair Redis orders entries by (milliseconds, sequence)."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    """The stream entry id: the position in the log, usable as ?after=."""
    type: EventType
    version: int
    """The payload's schema version: the current one once read (msarch.upcasting)."""
    time: datetime
    message_id: str
    correlation_id: str | None = None
    trace_id: str | None = None
    """The trace of the request that produced it (KeyValueStored; none in older entries)."""
    payload: dict[str, Any]
