"""What makes up the public API behind the gateway: the one place listing it.

The gateway proxies /api/* without knowing the routes, so its own OpenAPI would
be empty; the public one (GET /openapi.json, /docs) is built from these routers.
It has no broker either, so the AsyncAPI document (GET /docs/asyncapi.json) is
generated from the services' Messaging, each wired on a bus of its own. The
services' route and handler modules declare only (each service is built by its
app.py), so importing them here starts nothing. Where each prefix is sent is
the routing table's business (apps/gateway/upstreams.py).
"""

from fastapi import APIRouter

from apps.batch.handlers import MESSAGING as BATCH
from apps.batch.routes import router as batch_router
from apps.roundtrip.handlers import MESSAGING as ROUNDTRIP
from apps.roundtrip.routes import router as roundtrip_router
from apps.store.dead_letters import router as dead_letters_router
from apps.store.handlers import MESSAGING as STORE
from apps.websocket.handlers import MESSAGING as WEBSOCKET
from msarch.service import Messaging

PUBLIC_API: tuple[APIRouter, ...] = (roundtrip_router, batch_router, dead_letters_router)
PUBLIC_MESSAGING: tuple[Messaging, ...] = (ROUNDTRIP, STORE, BATCH, WEBSOCKET)
