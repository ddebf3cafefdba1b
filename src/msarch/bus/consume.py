"""The consume middleware every backend installs: metrics, and dead letters with the reason."""

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage
from faststream.message import StreamMessage
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

if TYPE_CHECKING:
    from msarch.bus.base import Bus

log = logging.getLogger("msarch.bus")

CONSUMED = Counter(
    "msarch_messages_consumed_total", "Messages handled", ["service", "channel", "outcome"]
)
HANDLING = Histogram("msarch_message_handling_seconds", "Handler time", ["service", "channel"])

# Looking a labelled child up costs as much as the rest of the metrics: once per label set.
_consumed = functools.lru_cache(maxsize=256)(CONSUMED.labels)
_handling = functools.lru_cache(maxsize=64)(HANDLING.labels)

# Errors that no redelivery can fix: the message itself is wrong.
_POISON = (ValidationError, json.JSONDecodeError, UnicodeDecodeError)


def consume_middleware(bus: "Bus[Any]") -> Callable[..., "ConsumeMiddleware"]:
    """The middleware factory for a broker: FastStream builds one per message."""

    def make(msg: Any, /, **kwargs: Any) -> ConsumeMiddleware:
        middleware = ConsumeMiddleware(msg, **kwargs)
        middleware.bus = bus
        return middleware

    return make


class ConsumeMiddleware(BaseMiddleware[Any, Any]):
    """Counts and times every message; dead-letters poison with the reason.

    (FastStream's Prometheus middleware does more, at a quarter of the store's
    throughput; these two metrics are what an operator of this system reads.)
    """

    bus: "Bus[Any]"

    async def consume_scope(
        self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        channel = self.bus.channel_of(msg)
        started = time.perf_counter()
        outcome = "error"
        try:
            with self.bus.handling(msg):
                result = await call_next(msg)
            outcome = "ok"
            return result
        except _POISON as exc:
            await self._dead_letter(msg, channel, f"invalid message: {_one_line(exc)}")
            outcome = "dead-lettered"
        except Exception as exc:
            deliveries = self.bus.deliveries(msg)
            if deliveries < self.bus.settings.delivery_limit:
                raise  # nacked and redelivered
            await self._dead_letter(
                msg, channel, f"handler failed {deliveries} times, last error: {_one_line(exc)}"
            )
            outcome = "dead-lettered"
        finally:
            _consumed(self.bus.service, channel, outcome).inc()
            _handling(self.bus.service, channel).observe(time.perf_counter() - started)
        raise AckMessage

    async def _dead_letter(self, msg: StreamMessage[Any], channel_name: str, reason: str) -> None:
        log.warning(
            "dead-lettering message",
            extra={"message_id": msg.message_id, "channel": channel_name, "reason": reason},
        )
        headers = {k: v for k, v in (msg.headers or {}).items() if isinstance(v, str | int | float)}
        await self.bus.dead_letter(
            channel_name, msg.body, headers, reason, msg.message_id, self.bus.deliveries(msg)
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:1000] or type(exc).__name__
