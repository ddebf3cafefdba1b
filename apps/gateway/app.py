"""The gateway: the one address clients use (HTTP API, websocket, web client and docs)."""

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from fastapi import FastAPI

from apps.gateway.docs import mount_docs
from apps.gateway.routes import router
from apps.gateway.upstreams import routes_of, upstreams_of
from apps.gateway.web_client import mount_web_client
from msarch.discovery import registered
from msarch.observability import configure_logging
from msarch.service import create_app
from msarch.settings import get_settings

settings = get_settings()
configure_logging("gateway", settings.log_level)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=512, limit_per_host=0, keepalive_timeout=30)
    # Bodies pass through as they are: no decompression, no client timeout but the route's.
    async with (
        aiohttp.ClientSession(
            connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(None)
        ) as client,
        app.state.upstreams,
        registered("gateway", settings, settings.gateway_port),
    ):
        app.state.client = client
        yield


# /docs and /openapi.json are the public API's, served offline by apps.gateway.docs.
app = create_app("gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
app.state.settings = settings
app.state.upstreams = upstreams_of(settings)
app.state.routes = routes_of(settings)
app.include_router(router)
mount_docs(app)
mount_web_client(app)
