"""The consume middleware every backend installs: the message's request id and trace, metrics,
and dead letters with the reason."""

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage
from faststream.message import StreamMessage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from msarch import tracing
from msarch.observability import message_trace, request_id

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
    """Counts and times every message; dead-letters poison with the reason. While it is
    handled, the message's correlation id is the request id of its log lines, and it is in
    the trace it came with: in a consumer span of its own, unless its channel is traced in
    groups (then only its traceparent is kept, for the log lines and the handler).

    (FastStream's Prometheus and OpenTelemetry middlewares do more, each at a large share of
    the store's throughput: they build their attributes and spans for every message, sampled
    or not. These metrics, and a span only for a sampled message, are what this system needs.)
    """

    bus: "Bus[Any]"

    async def consume_scope(
        self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        if isinstance(msg.raw_message, list):  # a fetched batch: the bus settles each message
            with self.bus.handling(msg):
                return await call_next(msg)
        channel = self.bus.channel_of(msg)
        headers = msg.headers or {}
        rid_token = request_id.set(msg.correlation_id)
        trace_token = message_trace.set(headers.get(tracing.TRACEPARENT))
        span = None
        if channel not in self.bus.traced_in_groups:
            span = self._span(msg, channel, headers)
        context_token = otel_context.attach(trace.set_span_in_context(span)) if span else None
        try:
            return await self._handled(call_next, msg, channel, span)
        finally:
            if context_token is not None:
                otel_context.detach(context_token)
            if span is not None:
                span.end()
            message_trace.reset(trace_token)
            request_id.reset(rid_token)

    def _span(self, msg: StreamMessage[Any], channel: str, headers: dict[str, Any]) -> Span | None:
        """The message's consumer span, a child of the publish it came from; None without a
        trace (a message from outside msarch)."""
        parent = tracing.context_from(headers)
        if parent is None:
            return None
        span = self.bus.tracer.start_span(
            f"{channel} process", context=parent, kind=SpanKind.CONSUMER
        )
        if span.is_recording():
            span.set_attributes(
                {
                    "messaging.system": self.bus.system,
                    "messaging.destination.name": channel,
                    "messaging.operation.type": "process",
                    "messaging.message.id": msg.message_id or "",
                    "msarch.instance": self.bus.instance,
                    "msarch.deliveries": self.bus.deliveries(msg),
                }
            )
        return span

    async def _handled(
        self,
        call_next: Callable[[Any], Awaitable[Any]],
        msg: StreamMessage[Any],
        channel: str,
        span: Span | None,
    ) -> Any:
        started = time.perf_counter()
        outcome = "error"
        try:
            with self.bus.handling(msg):
                result = await call_next(msg)
            outcome = "ok"
            return result
        except _POISON as exc:
            await self._dead_letter(msg, channel, invalid_reason(exc))
            outcome = "dead-lettered"
        except Exception as exc:
            deliveries = self.bus.deliveries(msg)
            if deliveries < self.bus.settings.delivery_limit:
                raise  # nacked and redelivered
            await self._dead_letter(msg, channel, failed_reason(deliveries, exc))
            outcome = "dead-lettered"
        finally:
            counted(self.bus, channel, outcome, time.perf_counter() - started)
            if span is not None and span.is_recording():
                span.set_attribute("msarch.outcome", outcome)
                if outcome != "ok":
                    span.set_status(StatusCode.ERROR)
        raise AckMessage

    async def _dead_letter(self, msg: StreamMessage[Any], channel_name: str, reason: str) -> None:
        await dead_lettered(
            self.bus,
            channel_name,
            msg.body,
            msg.headers or {},
            reason,
            msg.message_id,
            self.bus.deliveries(msg),
        )


def counted(bus: "Bus[Any]", channel: str, outcome: str, seconds: float) -> None:
    """One message handled: its outcome and how long it took, in /metrics."""
    _consumed(bus.service, channel, outcome).inc()
    _handling(bus.service, channel).observe(seconds)


async def dead_lettered(
    bus: "Bus[Any]",
    channel_name: str,
    body: bytes,
    headers: dict[str, Any],
    reason: str,
    message_id: str | None,
    deliveries: int,
) -> None:
    """A message that cannot be processed, to `<channel>.dead` with the reason and those of
    its headers a header table can carry again, logged."""
    log.warning(
        "dead-lettering message",
        extra={"message_id": message_id, "channel": channel_name, "reason": reason},
    )
    kept = {k: v for k, v in headers.items() if isinstance(v, str | int | float)}
    await bus.dead_letter(channel_name, body, kept, reason, message_id, deliveries)


def failed_reason(deliveries: int, exc: BaseException) -> str:
    return f"handler failed {deliveries} times, last error: {one_line(exc)}"


def invalid_reason(exc: BaseException) -> str:
    return f"invalid message: {one_line(exc)}"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:1000] or type(exc).__name__
