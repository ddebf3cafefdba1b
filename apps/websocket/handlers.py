"""The websocket service consumes `forward_roundtrip` (every instance gets every message)."""

import json
import logging

from apps.websocket.hub import Hub
from msarch import channels
from msarch.bus import EVENT_ID_HEADER
from msarch.messages import KeyValue
from msarch.service import Messaging, Runtime

log = logging.getLogger("msarch.websocket")


def frame_of(kv: KeyValue, event_id: str | None) -> str:
    """The JSON text frame clients get: the key/value and its position in the event log."""
    return json.dumps({**kv.model_dump(mode="json"), "event_id": event_id}, ensure_ascii=False)


def subscribe(runtime: Runtime) -> None:
    bus, hub = runtime.bus, runtime.dependency(Hub)

    @bus.subscriber(channels.FORWARD_ROUNDTRIP)
    async def on_forward(kv: KeyValue) -> None:
        event_id = (bus.current_message().headers or {}).get(EVENT_ID_HEADER)
        sent = await hub.push(frame_of(kv, event_id), event_id)
        log.debug("pushed", extra={"message_id": str(kv.id), "clients": sent})


MESSAGING = Messaging("websocket", subscribe=subscribe, dependencies=(Hub,))
