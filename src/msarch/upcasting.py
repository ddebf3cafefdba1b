"""Reading old events as the current version: one small function per version step.

Every event in the log carries the schema version of its payload (the `version` field of its
stream entry); entries written before versions existed have none and are version 1. Readers
(replay, the websocket catch-up, /api/events, snapshots) see every event at CURRENT_VERSION:
`upcast` runs the steps from the version it was written at.

A step is registered per event type and the version it reads. To change a payload: raise
CURRENT_VERSION, write the scripts' new payload with it (storage/scripts/*.lua write the
version), and add the step from the old version for every type (`unchanged` where the type's
payload did not change).

Version history:
  1  the payloads as msarch wrote them until 2026-12 (no version field).
  2  the entry carries its version; BatchFailed's `detail` is null when there is none
     (version 1 wrote "").
"""

from collections.abc import Callable
from typing import Any

from msarch.events import EventType

CURRENT_VERSION = 2

Payload = dict[str, Any]
Step = Callable[[Payload], Payload]


def unchanged(payload: Payload) -> Payload:
    return payload


def _failed_1_to_2(payload: Payload) -> Payload:
    return {**payload, "detail": payload.get("detail") or None}


STEPS: dict[tuple[EventType, int], Step] = {
    **{(kind, 1): unchanged for kind in EventType},
    (EventType.BatchFailed, 1): _failed_1_to_2,
}
"""(event type, the version a step reads) -> the step to the next version."""


class UnknownVersion(ValueError):
    """An event version no step leads on from (a log this msarch cannot read)."""


def upcast(kind: EventType, version: int, payload: Payload) -> Payload:
    """`payload`, written at `version`, as CURRENT_VERSION reads it. A version newer than this
    code's (written by a newer msarch during a rolling upgrade) is read as it is: its extra
    fields are kept, as messages keep theirs."""
    while version < CURRENT_VERSION:
        step = STEPS.get((kind, version))
        if step is None:
            raise UnknownVersion(f"{kind.value} version {version}: no step to {version + 1}")
        payload = step(payload)
        version += 1
    return payload
