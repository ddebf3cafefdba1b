"""The websocket service consumes `forward_roundtrip` (every instance gets every message)."""

import json
import logging

from apps.websocket.hub import Hub
from msarch import channels
from msarch.bus import EVENT_ID_HEADER
from msarch.messages import KeyValue
from msarch.observability import current_trace_id
from msarch.service import Messaging, Runtime

log = logging.getLogger("msarch.websocket")


def frame_of(kv: KeyValue, event_id: str | None, trace_id: str | None = None) -> str:
    """The JSON text frame clients get: the key/value, its position in the event log, and the
    trace of the POST that sent it (GET /api/traces/{trace_id}; live or replayed from the log,
    which keeps it: null only for events written before it did)."""
    frame = {**kv.model_dump(mode="json"), "event_id": event_id, "trace_id": trace_id}
    return json.dumps(frame, ensure_ascii=False)


def subscribe(runtime: Runtime) -> None:
    bus, hub = runtime.bus, runtime.dependency(Hub)

    @bus.subscriber(channels.FORWARD_ROUNDTRIP)
    async def on_forward(kv: KeyValue) -> None:
        event_id = (bus.current_message().headers or {}).get(EVENT_ID_HEADER)
        frame = frame_of(kv, event_id, current_trace_id())
        with bus.tracer.start_as_current_span("websocket push") as span:
            sent = await hub.push(frame, event_id)
            span.set_attribute("msarch.clients", sent)
        log.debug("pushed", extra={"message_id": str(kv.id), "clients": sent})


MESSAGING = Messaging("websocket", subscribe=subscribe, dependencies=(Hub,))
