"""The bus's series in /metrics besides the consume middleware's: what each service publishes
and what the broker confirmed, per channel, and the lag of each channel it consumes.

Every publish counts once in msarch_messages_published_total when it goes to the broker, and
once in msarch_publish_confirms_total when its confirm came (outcome="confirmed") or did not
(outcome="failed": refused, timed out, connection lost); the difference is what is in flight.
The lag is read from the broker every LAG_EVERY_S by the service that consumes.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

if TYPE_CHECKING:
    from msarch.bus.base import Bus

log = logging.getLogger("msarch.bus.metrics")

PUBLISHED = Counter(
    "msarch_messages_published_total", "Messages sent to the broker", ["service", "channel"]
)
CONFIRMS = Counter(
    "msarch_publish_confirms_total",
    "Publishes whose broker confirm came (confirmed) or did not (failed)",
    ["service", "channel", "outcome"],
)
CONSUMER_LAG = Gauge(
    "msarch_consumer_lag",
    "Messages waiting for this service's consumer of a channel (RabbitMQ: ready in its queue; "
    "NATS: pending for its consumer)",
    ["service", "channel"],
)
LAG_EVERY_S = 5.0
LAG_TIMEOUT_S = 3.0
"""A lag the broker does not answer in time (a node cut off) waits for the next round."""

Send = Callable[[str, bytes], Awaitable[None]]


@dataclass(frozen=True)
class PublishCounts:
    """The three counters of one (service, channel), looked up once: the hot path only adds."""

    published: Counter
    confirmed: Counter
    failed: Counter

    @classmethod
    def of(cls, service: str, channel: str) -> "PublishCounts":
        """Its series, each there from the start at 0 (a failure shows as a change, not as a
        series appearing)."""
        return cls(
            published=PUBLISHED.labels(service, channel),
            confirmed=CONFIRMS.labels(service, channel, "confirmed"),
            failed=CONFIRMS.labels(service, channel, "failed"),
        )

    def counting(self, send: Send) -> Send:
        """`send` (one message, returns once confirmed), counted."""

        async def counted(message_id: str, body: bytes) -> None:
            self.published.inc()
            try:
                await send(message_id, body)
            except BaseException:
                self.failed.inc()
                raise
            self.confirmed.inc()

        return counted


async def keep_lag_current(bus: "Bus[Any]", every_s: float = LAG_EVERY_S) -> None:
    """Keep msarch_consumer_lag{service,channel} current for every channel `bus` consumes."""
    while bus.subscribed:
        for channel in bus.subscribed:
            try:
                async with asyncio.timeout(LAG_TIMEOUT_S):
                    lag = await bus.consumer_lag(channel)
            except Exception:  # the broker is away: the figure waits for it, the service does not
                log.debug("no lag of %s this round", channel.name, exc_info=True)
                continue
            CONSUMER_LAG.labels(bus.service, bus.name(channel)).set(lag)
        await asyncio.sleep(every_s)
