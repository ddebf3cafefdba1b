"""WS /ws (every roundtrip, live, after a catch-up from ?after=) and GET /api/events."""

import re
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from apps.websocket.deps import HubDep
from apps.websocket.handlers import frame_of
from msarch.events import Event, EventType
from msarch.messages import KeyValue
from msarch.problems import Problem
from msarch.service import RuntimeDep
from msarch.storage import Store

router = APIRouter(tags=["events"])

EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
PAGE = 500


class EventPage(BaseModel):
    events: list[Event]
    next_after: str | None
    """Pass as ?after= for the next page; null when this page is the end of the log."""


def _checked(after: str | None) -> str | None:
    if after is not None and not EVENT_ID.match(after):
        raise Problem(
            422, "Invalid input", f"after must be an event id like 1700000000000-0, not {after!r}"
        )
    return after


@router.get("/api/events", summary="A page of the event log, oldest first")
async def events(
    runtime: RuntimeDep,
    after: Annotated[str | None, Query(description="an event id: start after it")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    page = await runtime.store.read_events(_checked(after), limit)
    return EventPage(events=page, next_after=page[-1].id if len(page) == limit else None)


@router.websocket("/ws")
async def ws(socket: WebSocket, runtime: RuntimeDep, hub: HubDep, after: str | None = None) -> None:
    await socket.accept()
    if after is not None and not EVENT_ID.match(after):
        await socket.close(code=1008, reason="after must be an event id")
        return
    client = hub.join(socket, catching_up=after is not None)
    try:
        if after is not None:
            last = await _catch_up(runtime.store, socket, after)
            await hub.go_live(client, last)
        while True:
            # Clients have nothing to say; reading notices when they leave.
            await socket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        hub.leave(client)


async def _catch_up(store: Store, socket: WebSocket, after: str) -> str:
    """Send every roundtrip after `after` from the log; returns the last id read."""
    last = after
    while page := await store.read_events(last, PAGE):
        for event in page:
            if event.type is EventType.KeyValueStored:
                kv = KeyValue.model_validate(event.payload)
                await socket.send_text(frame_of(kv, event.id))
        last = page[-1].id
    return last
