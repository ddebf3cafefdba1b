"""The message bus: the one place that knows which broker is behind the channels.

Services hold a `Bus` and use only `subscriber(channel)`, `publish(...)`,
`publish_stream(...)` and `current_message()`; the backend is chosen by the
scheme of MSARCH_BROKER_URL (amqp:// for RabbitMQ, nats:// for NATS JetStream)
and service code does not change with it.

The same rules on both backends:
- work channels (`event`, `batch`) are durable, shared by competing instances;
  broadcast channels (`forward_roundtrip`, `batch_reply`) reach every instance;
- every publish waits for the broker's confirmation, and fails loudly without it;
- a message is acked only after its handler returned;
- a message that does not decode or validate, or whose handler keeps failing
  (MSARCH_DELIVERY_LIMIT deliveries), is dead-lettered to `<channel>.dead` with
  the reason in the `x-msarch-reason` header: never dropped silently.
"""

from typing import Any

from msarch.bus.base import (
    CHANNEL_HEADER,
    EVENT_ID_HEADER,
    REASON_HEADER,
    Bus,
    PublishError,
)
from msarch.settings import Settings

__all__ = [
    "CHANNEL_HEADER",
    "EVENT_ID_HEADER",
    "REASON_HEADER",
    "Bus",
    "PublishError",
    "create_bus",
]


def create_bus(settings: Settings, *, service: str) -> Bus[Any]:
    """The bus for MSARCH_BROKER_URL."""
    scheme = settings.broker_url.split("://", 1)[0].lower()
    if scheme in ("amqp", "amqps"):
        from msarch.bus.rabbit import RabbitBus

        return RabbitBus(settings, service=service)
    if scheme in ("nats", "tls"):
        from msarch.bus.nats import NatsBus

        return NatsBus(settings, service=service)
    raise ValueError(f"MSARCH_BROKER_URL: no backend for {scheme}:// (use amqp:// or nats://)")
