"""What the gateway holds, and the Annotated aliases its routes take it by.

The gateway is not a create_service service (no bus, no store of its own):
`Gateway` is its runtime, built once by create_gateway, its HTTP client opened
by the lifespan. app.state holds only the Gateway; routes ask for the part
they need (SettingsDep, ClientDep, UpstreamsDep, ConfigDep, LimiterDep, LiveDep), and a test
can build a Gateway of its own.

Every dependency is `async def`: FastAPI runs a plain `def` one in its thread pool, a thread
hop per dependency per request (py-spy: 17 % of the gateway's event-loop time under load).
"""

from dataclasses import dataclass, field
from typing import Annotated

import aiohttp
from fastapi import Depends
from starlette.requests import HTTPConnection

from apps.gateway.architecture import LiveView
from apps.gateway.config import GatewayConfig
from apps.gateway.rate_limit import RateLimiter
from apps.gateway.upstreams import Upstreams
from msarch.settings import Settings
from msarch.tracing import Tracing


@dataclass
class Gateway:
    settings: Settings
    upstreams: Upstreams
    config: GatewayConfig
    """The routes and their policies."""
    tracing: Tracing
    """The gateway's own spans (each service keeps its own; /api/traces gathers them)."""
    client: aiohttp.ClientSession | None = None
    """The pooled HTTP client to the services; open only while the lifespan runs."""
    limiter: RateLimiter | None = None
    """The rate limits' Redis, while the lifespan runs; None when no route has a limit."""
    live: LiveView = field(default_factory=LiveView)
    """The live view's last reading of every instance (GET /api/live)."""


async def _gateway(connection: HTTPConnection) -> Gateway:
    gateway: Gateway = connection.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]


async def _settings(gateway: GatewayDep) -> Settings:
    return gateway.settings


async def _client(gateway: GatewayDep) -> aiohttp.ClientSession:
    if gateway.client is None:
        raise RuntimeError("the gateway's HTTP client is opened by its lifespan, not running")
    return gateway.client


async def _upstreams(gateway: GatewayDep) -> Upstreams:
    return gateway.upstreams


async def _config(gateway: GatewayDep) -> GatewayConfig:
    return gateway.config


async def _limiter(gateway: GatewayDep) -> RateLimiter | None:
    return gateway.limiter


async def _tracing(gateway: GatewayDep) -> Tracing:
    return gateway.tracing


async def _live(gateway: GatewayDep) -> LiveView:
    return gateway.live


SettingsDep = Annotated[Settings, Depends(_settings)]
ClientDep = Annotated[aiohttp.ClientSession, Depends(_client)]
UpstreamsDep = Annotated[Upstreams, Depends(_upstreams)]
ConfigDep = Annotated[GatewayConfig, Depends(_config)]
LimiterDep = Annotated[RateLimiter | None, Depends(_limiter)]
TracingDep = Annotated[Tracing, Depends(_tracing)]
LiveDep = Annotated[LiveView, Depends(_live)]
