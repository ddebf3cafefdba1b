"""The gateway: the one address clients use (HTTP API, websocket, web client and docs)."""

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from fastapi import FastAPI

from apps.gateway.deps import Gateway
from apps.gateway.docs import mount_docs
from apps.gateway.public_api import PUBLIC_API, PUBLIC_MESSAGING
from apps.gateway.routes import router
from apps.gateway.upstreams import routes_of, upstreams_of
from apps.gateway.web_client import mount_web_client
from msarch.discovery import registered
from msarch.observability import configure_logging
from msarch.service import create_app
from msarch.settings import Settings, get_settings


def _http_client() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=512, limit_per_host=0, keepalive_timeout=30)
    # Bodies pass through as they are: no decompression, no client timeout but the route's.
    return aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(None)
    )


def create_gateway(settings: Settings | None = None) -> FastAPI:
    """The gateway app: its Gateway built here; its client and discovery live in the lifespan."""
    settings = settings or get_settings()
    configure_logging("gateway", settings.log_level)
    gateway = Gateway(settings, upstreams_of(settings), routes_of(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            _http_client() as client,
            gateway.upstreams,
            registered("gateway", settings, settings.gateway_port),
        ):
            gateway.client = client
            try:
                yield
            finally:
                gateway.client = None

    # /docs and /openapi.json are the public API's, served offline by apps.gateway.docs.
    app = create_app("gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway
    app.include_router(router)
    mount_docs(app, PUBLIC_API, PUBLIC_MESSAGING)
    mount_web_client(app)
    return app


app = create_gateway()
