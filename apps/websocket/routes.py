"""WS /ws (every roundtrip, live, after a catch-up from ?after=) and GET /api/events."""

import json
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from apps.websocket.deps import HubDep
from apps.websocket.handlers import frame_of
from apps.websocket.hub import Client
from msarch.events import Event, EventType, is_event_id
from msarch.messages import KeyValue
from msarch.problems import Problem
from msarch.service import RuntimeDep
from msarch.storage import LogGap, Store

router = APIRouter(tags=["events"])

PAGE = 500


class EventPage(BaseModel):
    events: list[Event]
    next_after: str | None
    """Pass as ?after= for the next page; null when this page is the end of the log."""


def _checked(after: str | None) -> str | None:
    if after is not None and not is_event_id(after):
        raise Problem(
            422,
            "Invalid input",
            f"after must be an event id like 1700000000000-0 (two numbers below 2**64), "
            f"not {after!r}",
        )
    return after


@router.get(
    "/api/events",
    summary="A page of the event log, oldest first",
    responses={410: {"description": "events after `after` were trimmed from the log"}},
)
async def events(
    runtime: RuntimeDep,
    after: Annotated[str | None, Query(description="an event id: start after it")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    page = await runtime.store.read_events(_checked(after), limit)
    # Asked after the read: a trim before it is seen, one after it took nothing this page lacks.
    if after is not None and (gap := await runtime.store.gap_after(after)):
        raise Problem(
            410,
            "Gone",
            gap.detail,
            oldest_event_id=gap.oldest_kept,
            removed_up_to=gap.removed_up_to,
            snapshot_event_id=gap.snapshot_event_id,
        )
    return EventPage(events=page, next_after=page[-1].id if len(page) == limit else None)


@router.websocket("/ws")
async def ws(socket: WebSocket, runtime: RuntimeDep, hub: HubDep, after: str | None = None) -> None:
    await socket.accept()
    if after is not None and not is_event_id(after):
        await socket.close(code=1008, reason="after must be an event id")
        return
    client = hub.join(socket, catching_up=after is not None)
    try:
        if after is not None:
            last = await _catch_up(runtime.store, client, after)
            await hub.go_live(client, last)
        await _refuse_what_clients_send(socket)
    except WebSocketDisconnect:
        pass
    finally:
        hub.leave(client)


async def _refuse_what_clients_send(socket: WebSocket) -> None:
    """Clients have nothing to say: wait until they leave, and close on any frame they send
    (1003 for binary data, 1008 for text), saying why."""
    message = await socket.receive()
    if message["type"] == "websocket.disconnect":
        return
    binary = message.get("bytes") is not None
    await socket.close(
        code=1003 if binary else 1008,
        reason="this socket only sends: clients send no frames",
    )


async def _catch_up(store: Store, client: Client, after: str) -> str:
    """Send every roundtrip after `after` from the log; returns the last id read. Where the
    log no longer holds some of them (trimmed), a gap frame says so before what is kept."""
    last = after
    while True:
        page = await store.read_events(last, PAGE)
        if gap := await store.gap_after(last):  # after the read, as for /api/events
            await client.send(gap_frame(gap))
        if not page:
            return last
        for event in page:
            if event.type is EventType.KeyValueStored:
                kv = KeyValue.model_validate(event.payload)
                await client.send(frame_of(kv, event.id, event.trace_id))
        last = page[-1].id


def gap_frame(gap: LogGap) -> str:
    """The frame a catching-up client gets instead of silently missing trimmed events."""
    return json.dumps(
        {
            "type": "gap",
            "after": gap.after,
            "removed_up_to": gap.removed_up_to,
            "oldest_event_id": gap.oldest_kept,
            "snapshot_event_id": gap.snapshot_event_id,
            "detail": gap.detail,
        }
    )
