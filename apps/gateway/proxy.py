"""The gateway's proxying: HTTP with a pooled client, websockets in both directions.

The HTTP client is aiohttp's: measured here, httpx cost the gateway 6.7 ms of CPU
per proxied request, aiohttp 1.4 ms (docs/benchmarks.md).

Each request goes to the next instance in round-robin order; one that cannot be
connected to is marked (its circuit breaker counts it) and the next is tried,
which is safe because nothing was sent. An upstream that does not answer in
time, or no instance left to try, gives 503 problem+json with Retry-After;
anything else that goes wrong on the way is a 502 problem+json naming the
request id: never a 500, never a hang, never a dropped connection.

The path and query go upstream as the client sent them, still percent-encoded:
decoding them here would hand the upstream request line whatever bytes the
client encoded (a NUL, a CR), and encoding them again could change their meaning.
"""

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from urllib.parse import urlencode

import aiohttp
import websockets
from fastapi import Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from starlette.background import BackgroundTask
from websockets.exceptions import ConnectionClosed
from yarl import URL

from apps.gateway.api_key import API_KEY_HEADER, API_KEY_QUERY
from apps.gateway.config import Route
from apps.gateway.upstreams import Upstreams
from msarch.observability import REQUEST_ID_HEADER, TIMEOUT_HEADER, request_id
from msarch.problems import problem_response, unavailable
from msarch.tracing import TRACEPARENT, TRACESTATE, current_headers

log = logging.getLogger("msarch.gateway")

# Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    API_KEY_HEADER.lower(),  # the gateway's own credential stays at the gateway
}
# Set by the gateway's own server on the way out (the traceparent names the gateway's span).
_OWN = {"date", "server", REQUEST_ID_HEADER, TRACEPARENT, TRACESTATE}
_NOT_FORWARDED = _HOP | {TIMEOUT_HEADER, TRACEPARENT, TRACESTATE}
"""Request headers not passed on: hop-by-hop ones, and those the gateway sets itself (the
caller's trace goes on from the gateway's span)."""
CONNECT_TIMEOUT_S = 2.0
WHOLE_BODY_BYTES = 64 * 1024
"""An upstream answer of at most this many bytes (by its Content-Length) is read whole and sent
as one Response; a longer one, or one of unknown length, is streamed. A StreamingResponse
costs a task group and a disconnect listener per request: under the roundtrip load it was
6.6 % of the gateway's event-loop time (py-spy)."""
_TARGET = re.compile(rb"/[\x21-\x7e]*")
"""A request target the gateway forwards: printable ASCII, other bytes percent-encoded."""


class BadTarget(Exception):
    """The request's path or query holds bytes that are not percent-encoded."""


def upstream_target(request: Request) -> str:
    """The path and query to send upstream: the client's own bytes, never decoded."""
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    target = path + b"?" + query if query else path
    if not _TARGET.fullmatch(target):
        raise BadTarget(
            "the path and query must be printable ASCII: percent-encode every other byte"
        )
    return target.decode("ascii")


def _forward_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in headers
        if k.decode("latin-1").lower() not in _NOT_FORWARDED
    ]


async def proxy_http(
    request: Request,
    route: Route,
    upstreams: Upstreams,
    session: aiohttp.ClientSession,
    tracer: Tracer,
) -> Response:
    try:
        target = upstream_target(request)
    except BadTarget as exc:
        return problem_response(400, "Bad Request", str(exc))
    # Bodies are bounded by BodyLimit; holding one lets it go to a second instance.
    body = await request.body()
    if len(body) > route.body_limit_bytes:
        return problem_response(
            413,
            "Payload Too Large",
            f"{route.prefix} takes bodies of up to {route.body_limit_bytes} bytes",
        )
    headers = _forward_headers(request.headers.raw)
    headers.append((REQUEST_ID_HEADER, request_id.get() or ""))
    headers.append((TIMEOUT_HEADER, str(int(route.timeout_s * 1000))))
    timeout = aiohttp.ClientTimeout(total=route.timeout_s, sock_connect=CONNECT_TIMEOUT_S)
    refused = 0
    for base in upstreams.candidates(route.service, route):
        if not upstreams.allows(base, route):
            continue
        if route.retries is not None and refused > route.retries:
            break
        upstreams.started(base)
        try:
            with _upstream_span(tracer, request.method, route.service, base) as span:
                upstream = await session.request(
                    request.method,
                    URL(base + target, encoded=True),
                    headers=[*headers, *current_headers().items()],
                    data=body,
                    timeout=timeout,
                    allow_redirects=False,
                )
                span.set_attribute("http.response.status_code", upstream.status)
                if upstream.status >= 500:
                    span.set_status(StatusCode.ERROR)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Nothing was sent: safe to try the next instance.
            upstreams.finished(base)
            upstreams.failed(base, f"{route.service} at {base}: {exc!r}", route)
            refused += 1
            continue
        except TimeoutError:
            upstreams.finished(base)
            upstreams.failed(base, f"{route.service} at {base} timed out", route)
            log.warning("upstream timed out", extra={"upstream": route.service, "url": base})
            return unavailable(f"{route.service} did not answer within {route.timeout_s:g} s")
        except aiohttp.ClientError as exc:
            # The request may have arrived: repeating it could do it twice.
            upstreams.finished(base)
            upstreams.failed(base, f"{route.service} at {base}: {exc!r}", route)
            log.warning("upstream broke off", extra={"upstream": route.service, "error": repr(exc)})
            return unavailable(f"{route.service} is unreachable")
        except Exception as exc:  # whatever else breaks on the way: the gateway's fault, said so
            upstreams.finished(base)
            log.exception("proxying failed", extra={"upstream": route.service})
            return _bad_gateway(
                f"the gateway could not forward the request to {route.service}: {exc!r}"
            )
        if upstream.status >= 500:
            upstreams.failed(base, f"{route.service} at {base} answered {upstream.status}", route)
        else:
            upstreams.succeeded(base, route)

        def done(upstream: aiohttp.ClientResponse = upstream, base: str = base) -> None:
            upstream.release()
            upstreams.finished(base)

        return await _answer(upstream, route, done)
    return _no_instance(route, upstreams)


async def _answer(
    upstream: aiohttp.ClientResponse, route: Route, done: Callable[[], None]
) -> Response:
    """The upstream's answer, relayed: a small body read whole and sent as one Response (most
    answers: a 202, a status, a problem), anything else streamed as it comes."""
    headers = {
        k: v for k, v in upstream.headers.items() if k.lower() not in _HOP and k.lower() not in _OWN
    }
    length = upstream.content_length
    if length is None or length > WHOLE_BODY_BYTES:
        return StreamingResponse(
            _relay(upstream), upstream.status, headers, background=BackgroundTask(done)
        )
    try:
        body = await upstream.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("upstream broke off a response: %r", exc)
        return unavailable(f"{route.service} broke off its answer")
    finally:
        done()
    return Response(body, upstream.status, headers)


def _upstream_span(
    tracer: Tracer, method: str, service: str, base: str
) -> AbstractContextManager[Span]:
    """The span of one attempt at an upstream instance: the service's server span is its child."""
    return tracer.start_as_current_span(
        f"{method} {service}",
        kind=SpanKind.CLIENT,
        attributes={"msarch.upstream": service, "server.address": base},
    )


def _bad_gateway(detail: str) -> Response:
    rid = request_id.get()
    return problem_response(502, "Bad Gateway", detail, request_id=rid)


def _no_instance(route: Route, upstreams: Upstreams) -> Response:
    log.warning("no healthy instance", extra={"upstream": route.service})
    return unavailable(
        f"{route.service} is unreachable: no healthy instance is left",
        retry_after_s=upstreams.retry_after_s(route.service, route),
    )


async def _relay(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Headers are gone already; all that is left is to end the body early.
        log.warning("upstream broke off a response: %r", exc)


async def proxy_websocket(client: WebSocket, route: Route, upstreams: Upstreams) -> None:
    service = route.service
    query = urlencode([(k, v) for k, v in client.query_params.multi_items() if k != API_KEY_QUERY])
    upstream: websockets.ClientConnection | None = None
    for base in upstreams.candidates(service, route):
        if not upstreams.allows(base, route):
            continue
        url = base.replace("http://", "ws://", 1) + client.url.path + (f"?{query}" if query else "")
        try:
            upstream = await websockets.connect(
                url,
                open_timeout=5,
                additional_headers={REQUEST_ID_HEADER: request_id.get() or ""},
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            upstreams.failed(base, f"{service} at {base}: {exc!r}", route)
            continue
        upstreams.succeeded(base, route)
        break
    if upstream is None:
        log.warning("no websocket upstream", extra={"upstream": service})
        # 1013 Try Again Later, the websocket 503; closing before accept would be a bare 403.
        await client.accept()
        await client.close(code=1013, reason=f"{service} is unavailable")
        return
    await client.accept()
    async with upstream:
        to_upstream = asyncio.create_task(_client_to_upstream(client, upstream))
        to_client = asyncio.create_task(_upstream_to_client(upstream, client))
        _, pending = await asyncio.wait(
            {to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _client_to_upstream(client: WebSocket, upstream: websockets.ClientConnection) -> None:
    try:
        while True:
            message = await client.receive()
            if message["type"] == "websocket.disconnect":
                # The client's own close: "no status" (1005) is a normal end for the upstream.
                code = message.get("code", 1000)
                await upstream.close(code=1000 if code == 1005 else _sendable(code))
                return
            if message.get("text") is not None:
                await upstream.send(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send(message["bytes"])
    except (WebSocketDisconnect, ConnectionClosed):
        await upstream.close()


async def _upstream_to_client(upstream: websockets.ClientConnection, client: WebSocket) -> None:
    try:
        async for frame in upstream:
            if isinstance(frame, str):
                await client.send_text(frame)
            else:
                await client.send_bytes(frame)
        code, reason = upstream.close_code or 1000, upstream.close_reason or ""
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else 1011
        reason = closed.rcvd.reason if closed.rcvd else "upstream connection lost"
    except WebSocketDisconnect:
        return  # the client left; the other direction closes the upstream
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):  # the client may be gone
        await client.close(code=_sendable(code), reason=reason)


def _sendable(code: int) -> int:
    # 1005/1006/1015 are reserved: they describe a close but may not be sent.
    return 1011 if code in (1005, 1006, 1015) else code
