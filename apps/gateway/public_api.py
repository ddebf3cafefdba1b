"""The routers that make up the public HTTP API behind the gateway: the one place listing them.

The gateway proxies /api/* without knowing the routes, so its own OpenAPI would
be empty; the public one (GET /openapi.json, /docs) is built from these. The
services' route modules declare routes and models only (each service is built
by its app.py), so importing them here starts nothing. Where each prefix is
sent is the routing table's business (apps/gateway/upstreams.py).
"""

from fastapi import APIRouter

from apps.batch.routes import router as batch_router
from apps.roundtrip.routes import router as roundtrip_router

PUBLIC_API: tuple[APIRouter, ...] = (roundtrip_router, batch_router)
