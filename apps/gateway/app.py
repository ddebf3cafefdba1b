"""The gateway: the one address clients use (HTTP API, websocket, web client and docs)."""

import contextlib
from collections.abc import AsyncIterator

import httpx
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
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=128)
    async with (
        httpx.AsyncClient(limits=limits, timeout=settings.upstream_timeout_s) as client,
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
