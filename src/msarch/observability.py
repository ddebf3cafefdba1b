"""The request id (taken, made, echoed, put in every log line) and the HTTP metrics.

The log lines themselves are msarch.logs."""

import time
from contextvars import ContextVar
from uuid import uuid4

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

REQUEST_ID_HEADER = "x-request-id"
TIMEOUT_HEADER = "x-request-timeout-ms"
"""How long, in ms from sending, the gateway waits for the answer: its route's timeout. A service
that cannot finish in time (a long batch) answers with what it knows before the gateway gives up
with nothing but a 503."""
TRANSPORT_KEY = "msarch.transport"
"""Where a websocket's scope holds the server's transport of its connection (or None)."""

HTTP_REQUESTS = Counter(
    "msarch_http_requests_total", "HTTP requests answered", ["service", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "msarch_http_request_seconds", "HTTP request latency", ["service", "route"]
)


class RequestContext:
    """Takes X-Request-ID from the caller (or makes one), echoes it, and counts the request."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

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
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.encode(), rid.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
            if scope["type"] == "http":
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                HTTP_REQUESTS.labels(self.service, path, str(status)).inc()
                HTTP_LATENCY.labels(self.service, path).observe(time.perf_counter() - started)
