"""The gateway's routes: /api/* and /ws proxied, and /health over every upstream."""

import asyncio
from collections.abc import Sequence

import aiohttp
from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import JSONResponse, Response

from apps.gateway.api_key import API_KEY_QUERY, require_api_key, websocket_authorized
from apps.gateway.deps import ClientDep, RoutesDep, SettingsDep, UpstreamsDep
from apps.gateway.proxy import proxy_http, proxy_websocket
from apps.gateway.upstreams import Route
from msarch.problems import Problem
from msarch.settings import SERVICES

router = APIRouter()


def route_for(routes: Sequence[Route], path: str) -> Route:
    for route in routes:
        if path == route.prefix or path.startswith(route.prefix + "/"):
            return route
    raise Problem(404, "Not Found", f"no route for {path}")


@router.get("/health", tags=["operations"], summary="The gateway and every service behind it")
async def health(upstreams: UpstreamsDep, client: ClientDep) -> JSONResponse:
    async def check(service: str) -> tuple[str, object]:
        instances = upstreams.candidates(service)
        if not instances:
            return service, {"status": "unreachable: no healthy instance"}
        try:
            timeout = aiohttp.ClientTimeout(total=3)
            async with client.get(instances[0] + "/health", timeout=timeout) as answer:
                state = await answer.json(content_type=None)
            return service, {**state, "instances": len(instances)}
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as exc:
            return service, {"status": f"unreachable: {type(exc).__name__}"}

    results = dict(await asyncio.gather(*(check(s) for s in SERVICES if s != "gateway")))
    healthy = all(isinstance(r, dict) and r.get("status") == "ok" for r in results.values())
    body = {"service": "gateway", "status": "ok" if healthy else "degraded", "upstreams": results}
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.api_route(
    "/api/{path:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
    dependencies=[Depends(require_api_key)],
)
async def api(
    request: Request, path: str, routes: RoutesDep, upstreams: UpstreamsDep, client: ClientDep
) -> Response:
    route = route_for(routes, "/api/" + path)
    return await proxy_http(request, route, upstreams, client)


@router.websocket("/ws")
async def ws(client: WebSocket, settings: SettingsDep, upstreams: UpstreamsDep) -> None:
    if not websocket_authorized(client, settings.api_key):
        # Accept, then 1008 Policy Violation: a browser sees the code and the reason,
        # while a refused handshake would only show it an opaque 1006.
        await client.accept()
        await client.close(code=1008, reason=f"API key required: add ?{API_KEY_QUERY}=...")
        return
    await proxy_websocket(client, upstreams, "websocket")
