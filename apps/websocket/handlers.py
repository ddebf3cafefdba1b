"""The websocket service consumes `forward_roundtrip` (every instance gets every message)."""

import logging

from apps.websocket.hub import Hub
from msarch import channels
from msarch.messages import KeyValue
from msarch.service import Runtime

HUB = Hub()
log = logging.getLogger("msarch.websocket")


def subscribe(runtime: Runtime) -> None:
    @runtime.bus.subscriber(channels.FORWARD_ROUNDTRIP)
    async def on_forward(kv: KeyValue) -> None:
        sent = await HUB.push(kv.model_dump_json())
        log.info("pushed", extra={"message_id": str(kv.id), "clients": sent})
