"""The gateway: the one address clients use (HTTP API, websocket, web client and docs)."""

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from apps.gateway.config import Cors, config_of
from apps.gateway.deps import Gateway
from apps.gateway.docs import mount_docs
from apps.gateway.live import router as live_router
from apps.gateway.public_api import PUBLIC_API, PUBLIC_MESSAGING
from apps.gateway.rate_limit import RateLimiter
from apps.gateway.routes import router
from apps.gateway.traces import router as traces_router
from apps.gateway.upstreams import upstreams_of
from apps.gateway.web_client import mount_web_client
from msarch.discovery import registered
from msarch.logs import configure_logging, summarised
from msarch.service import create_app
from msarch.settings import Settings, get_settings
from msarch.storage import Store
from msarch.tracing import Tracing


def _http_client() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=512, limit_per_host=0, keepalive_timeout=30)
    # Bodies pass through as they are: no decompression, no client timeout but the route's.
    return aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(None)
    )


def create_gateway(settings: Settings | None = None) -> FastAPI:
    """The gateway app: its Gateway built here; its client and discovery live in the lifespan."""
    settings = settings or get_settings()
    configure_logging("gateway", settings.log_level, settings.log_format)
    config = config_of(settings)
    tracing = Tracing.start("gateway", settings)
    gateway = Gateway(settings, upstreams_of(settings), config, tracing)
    limited = any(route.rate_limit for route in config.routes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            _http_client() as client,
            gateway.upstreams,
            registered("gateway", settings, settings.gateway_port),
            summarised("gateway"),
        ):
            gateway.client = client
            gateway.limiter = (
                RateLimiter(Store.from_settings(settings, service="gateway")) if limited else None
            )
            try:
                yield
            finally:
                gateway.client = None
                if gateway.limiter:
                    await gateway.limiter.close()
                tracing.shutdown()

    # /docs and /openapi.json are the public API's, served offline by apps.gateway.docs.
    app = create_app(
        "gateway", tracing, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.gateway = gateway
    app.include_router(traces_router)  # before /api/{path}, which would proxy it
    app.include_router(live_router)  # likewise
    app.include_router(router)
    mount_docs(app, PUBLIC_API, PUBLIC_MESSAGING)
    mount_web_client(app)
    if config.cors:
        _allow_cross_origin(app, config.cors)
    return app


def _allow_cross_origin(app: FastAPI, cors: Cors) -> None:
    """Outermost, so that a preflight is answered before the API key or a route is asked."""
    app.add_middleware(
        CORSMiddleware,
        allow_origins=cors.allow_origins,
        allow_methods=cors.allow_methods,
        allow_headers=cors.allow_headers,
        expose_headers=cors.expose_headers,
        allow_credentials=cors.allow_credentials,
        max_age=cors.max_age_s,
    )


app = create_gateway()
