"""GET /api/live and /api/live/stream: the live architecture view's snapshots.

One snapshot (apps.gateway.architecture) has every instance of every service with its health
and, per channel, messages/s in and out, handler p50/p99, lag and dead letters, plus the
broker's, Redis's and Consul's state. The stream sends one a second as server-sent events,
only while someone listens. A browser's EventSource cannot set headers, so both routes take
the API key in ?api_key= too.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from apps.gateway.api_key import API_KEY_HEADER, API_KEY_QUERY, is_authorized
from apps.gateway.deps import ClientDep, LiveDep, SettingsDep, UpstreamsDep
from msarch.problems import Problem

router = APIRouter(tags=["live"])

EVERY_S = 1.0


async def require_key_or_query(request: Request, settings: SettingsDep) -> None:
    """The API key, from the X-API-Key header or ?api_key= (EventSource sends no header)."""
    presented = request.headers.get(API_KEY_HEADER) or request.query_params.get(API_KEY_QUERY)
    if not is_authorized(settings.api_key, presented):
        raise Problem(
            401,
            "Unauthorized",
            f"this gateway requires an API key: send it in the {API_KEY_HEADER} header "
            f"or as ?{API_KEY_QUERY}=",
        )


@router.get(
    "/api/live",
    summary="Every instance's health, rates, latency, lag and dead letters, now",
    dependencies=[Depends(require_key_or_query)],
)
async def live(live: LiveDep, client: ClientDep, upstreams: UpstreamsDep) -> dict[str, Any]:
    return await live.snapshot(client, upstreams)


@router.get(
    "/api/live/stream",
    summary="The same snapshot once a second, as server-sent events",
    dependencies=[Depends(require_key_or_query)],
    response_class=StreamingResponse,
)
async def live_stream(
    request: Request, live: LiveDep, client: ClientDep, upstreams: UpstreamsDep
) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        while not await request.is_disconnected():
            snapshot = await live.snapshot(client, upstreams)
            yield f"event: snapshot\ndata: {json.dumps(snapshot)}\n\n"
            await asyncio.sleep(EVERY_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
