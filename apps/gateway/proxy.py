"""The gateway's proxying: HTTP with a pooled client, websockets in both directions.

An upstream that cannot be reached or does not answer in time gives 503
problem+json with Retry-After: never a 500, never a hang.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import websockets
from fastapi import Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from websockets.exceptions import ConnectionClosed, InvalidStatus

from apps.gateway.upstreams import Route, Upstreams
from msarch.observability import REQUEST_ID_HEADER, request_id
from msarch.problems import unavailable

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
}
# Set by the gateway's own server on the way out.
_OWN = {"date", "server", REQUEST_ID_HEADER}


def _forward_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.decode("latin-1").lower() not in _HOP]


async def proxy_http(
    request: Request, route: Route, upstreams: Upstreams, client: httpx.AsyncClient
) -> Response:
    base = upstreams.resolve(route.service)
    headers = _forward_headers(request.headers.raw)
    headers.append((REQUEST_ID_HEADER.encode(), (request_id.get() or "").encode("latin-1")))
    upstream_request = client.build_request(
        request.method,
        base + request.url.path,
        params=request.url.query,
        headers=headers,
        content=request.stream(),
        timeout=httpx.Timeout(route.timeout_s, connect=2.0),
    )
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.TimeoutException:
        log.warning("upstream timed out", extra={"upstream": route.service})
        return unavailable(f"{route.service} did not answer within {route.timeout_s:g} s")
    except httpx.TransportError as exc:
        log.warning("upstream unreachable", extra={"upstream": route.service, "error": repr(exc)})
        return unavailable(f"{route.service} is unreachable")
    return StreamingResponse(
        _relay(upstream),
        status_code=upstream.status_code,
        headers={
            k: v
            for k, v in upstream.headers.items()
            if k.lower() not in _HOP and k.lower() not in _OWN
        },
        background=BackgroundTask(upstream.aclose),
    )


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        # Headers are gone already; all that is left is to end the body early.
        log.warning("upstream broke off a response: %r", exc)


async def proxy_websocket(client: WebSocket, upstreams: Upstreams, service: str) -> None:
    url = upstreams.ws_url(service, client.url.path)
    if client.url.query:
        url += "?" + client.url.query
    try:
        upstream = await websockets.connect(
            url,
            open_timeout=5,
            additional_headers={REQUEST_ID_HEADER: request_id.get() or ""},
        )
    except (OSError, TimeoutError, InvalidStatus, websockets.InvalidHandshake) as exc:
        log.warning(
            "websocket upstream unreachable", extra={"upstream": service, "error": repr(exc)}
        )
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
                await upstream.close(code=message.get("code", 1000))
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
