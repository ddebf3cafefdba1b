"""The request id and the trace (taken, made, echoed, put in every log line), the HTTP
request's span, and the HTTP metrics.

The log lines themselves are msarch.logs; the tracer and its propagation are msarch.tracing."""

import time
from contextvars import ContextVar
from uuid import uuid4

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from msarch import tracing

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
message_trace: ContextVar[str | None] = ContextVar("message_trace", default=None)
"""The traceparent of the message being handled, where no span is made for each message (batch
items): what its log lines take their trace id from."""

REQUEST_ID_HEADER = "x-request-id"
TIMEOUT_HEADER = "x-request-timeout-ms"
"""How long, in ms from sending, the gateway waits for the answer: its route's timeout. A service
that cannot finish in time (a long batch) answers with what it knows before the gateway gives up
with nothing but a 503."""
TRANSPORT_KEY = "msarch.transport"
"""Where a websocket's scope holds the server's transport of its connection (or None)."""

UNTRACED_PATHS = ("/health", "/metrics", "/traces", "/api/traces")
"""Probes and the trace views themselves: answered with a traceparent, recorded as no span."""

HTTP_REQUESTS = Counter(
    "msarch_http_requests_total", "HTTP requests answered", ["service", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "msarch_http_request_seconds", "HTTP request latency", ["service", "route"]
)


def current_trace_id() -> str | None:
    """The trace id (hex) of what is being handled: the current span's, else the message's."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return tracing.trace_id_hex(span_context.trace_id)
    traceparent = message_trace.get()
    return traceparent[3:35] if traceparent else None


class RequestContext:
    """Takes X-Request-ID from the caller (or makes one), echoes it, and counts the request;
    continues the caller's trace (or starts one) in a server span, and answers `traceparent`."""

    def __init__(self, app: ASGIApp, service: str, tracer: Tracer | None = None) -> None:
        self.app = app
        self.service = service
        self.tracer = tracer or trace.NoOpTracer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # The server's own connection (uvicorn's protocol owns the `send` it gives us), so a
            # client that reads nothing can be cut off: its close frame could never be sent.
            scope[TRANSPORT_KEY] = getattr(getattr(send, "__self__", None), "transport", None)
        headers = dict(scope.get("headers") or [])
        rid = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")[:128] or uuid4().hex
        token = request_id.set(rid)
        own = [(REQUEST_ID_HEADER.encode(), rid.encode("latin-1"))]
        span, trace_token = None, None
        if scope["type"] == "http":  # a websocket lasts for hours: its frames name their traces
            span = self._span(scope, headers)
            trace_token = otel_context.attach(trace.set_span_in_context(span))
            traceparent = tracing.traceparent_of(span.get_span_context())
            own.append((tracing.TRACEPARENT.encode(), traceparent.encode("ascii")))
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *own]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if trace_token is not None:
                otel_context.detach(trace_token)
            request_id.reset(token)
            if span is not None:
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                _end(span, scope, path, status, rid)
                HTTP_REQUESTS.labels(self.service, path, str(status)).inc()
                HTTP_LATENCY.labels(self.service, path).observe(time.perf_counter() - started)

    def _span(self, scope: Scope, headers: dict[bytes, bytes]) -> Span:
        """The request's server span, in the caller's trace if it sent one: a non-recording one
        for the UNTRACED_PATHS."""
        path: str = scope.get("path", "")
        if path.startswith(UNTRACED_PATHS):
            return trace.get_current_span(tracing.untraced_context())
        caller = tracing.context_from(
            {
                name: headers[name.encode()].decode("latin-1")
                for name in (tracing.TRACEPARENT, tracing.TRACESTATE)
                if name.encode() in headers
            }
        )
        return self.tracer.start_span(
            f"{scope.get('method', 'HTTP')} {path}", context=caller, kind=SpanKind.SERVER
        )


def _end(span: Span, scope: Scope, route: str, status: int, rid: str) -> None:
    """The server span named by its route (the template, not the path), with its answer."""
    if span.is_recording():
        method = scope.get("method", "HTTP")
        span.update_name(f"{method} {route}")
        span.set_attributes(
            {
                "http.request.method": method,
                "http.route": route,
                "url.path": scope.get("path", ""),
                "http.response.status_code": status,
                "msarch.request_id": rid,
            }
        )
        if status >= 500:
            span.set_status(StatusCode.ERROR)
    span.end()
