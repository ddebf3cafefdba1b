"""The gateway's routes: /api/* and /ws proxied under their route's policies, and /health
over every upstream."""

import asyncio

import aiohttp
from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import JSONResponse, Response

from apps.gateway.api_key import API_KEY_QUERY, client_of, require_api_key, websocket_authorized
from apps.gateway.config import GatewayConfig, Route
from apps.gateway.deps import (
    ClientDep,
    ConfigDep,
    LimiterDep,
    SettingsDep,
    TracingDep,
    UpstreamsDep,
)
from apps.gateway.proxy import proxy_http, proxy_websocket
from msarch.problems import Problem
from msarch.settings import SERVICES

router = APIRouter()


def route_for(config: GatewayConfig, path: str) -> Route:
    route = config.route_for(path)
    if route is None:
        raise Problem(404, "Not Found", f"no route for {path}")
    return route


@router.get("/health", tags=["operations"], summary="The gateway and every service behind it")
async def health(upstreams: UpstreamsDep, client: ClientDep) -> JSONResponse:
    async def check(service: str) -> tuple[str, object]:
        instances = upstreams.instances(service)
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
    request: Request,
    path: str,
    config: ConfigDep,
    upstreams: UpstreamsDep,
    client: ClientDep,
    limiter: LimiterDep,
    tracing: TracingDep,
) -> Response:
    route = route_for(config, "/api/" + path)
    verdict = await limiter.take(route, client_of(request)) if limiter else None
    if verdict and not verdict.allowed:
        raise Problem(
            429,
            "Too Many Requests",
            f"the rate limit of {route.prefix} is {verdict.limit.requests} requests per "
            f"{verdict.limit.period_s:g} s: retry after {verdict.headers()['Retry-After']} s",
            headers=verdict.headers(),
        )
    answer = await proxy_http(request, route, upstreams, client, tracing.tracer)
    if verdict:
        answer.headers.update(verdict.headers())
    return answer


@router.websocket("/ws")
async def ws(
    client: WebSocket,
    settings: SettingsDep,
    config: ConfigDep,
    upstreams: UpstreamsDep,
    limiter: LimiterDep,
) -> None:
    route = config.route_for("/ws")
    if route is None or not websocket_authorized(client, settings.api_key):
        # Accept, then close with a code: a browser sees the code and the reason, while a
        # refused handshake would only show it an opaque 1006.
        await client.accept()
        reason = f"API key required: add ?{API_KEY_QUERY}=..." if route else "no route for /ws"
        await client.close(code=1008, reason=reason)
        return
    verdict = await limiter.take(route, client_of(client)) if limiter else None
    if verdict and not verdict.allowed:
        await client.accept()  # 1013 Try Again Later, the websocket 429
        retry = verdict.headers()["Retry-After"]
        await client.close(code=1013, reason=f"too many connections: retry after {retry} s")
        return
    await proxy_websocket(client, route, upstreams)
