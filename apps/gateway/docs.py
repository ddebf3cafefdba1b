"""The docs the gateway serves, with no internet: OpenAPI at /docs, AsyncAPI at /docs/asyncapi.

The gateway only proxies /api/*, so its own OpenAPI would be empty: the public
one is built from the routers it is given, and the AsyncAPI document, generated
by FastStream, from the services' Messaging (apps/gateway/public_api.py lists
both; this module imports no other service). Swagger UI's JS and CSS come from
the fastapi-offline package instead of a CDN.
"""

from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

import msarch
from apps.gateway.deps import SettingsDep
from apps.gateway.web_client import CLIENT_DIR
from msarch.asyncapi import Backend, Document, backend_of, system_document
from msarch.problems import PROBLEM_JSON
from msarch.service import Messaging

SWAGGER_UI_DIR = Path(str(files("fastapi_offline") / "static"))
SWAGGER_UI_URL = "/docs/swagger-ui"

DESCRIPTION = """\
The public HTTP API of msarch, as reached through the gateway.

Every roundtrip also comes back on the websocket **WS /ws** (optional `?after=<event id>`):
one JSON text frame `{"id", "key", "value", "accepted_at"}` each.
Errors are `application/problem+json` with a `title` and a `detail`.
The messages the services exchange on the broker are described at [/docs/asyncapi](/docs/asyncapi).
"""

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details; batches add batch_id, batch_status, elapsed_ms.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["title", "status"],
}

API_KEY_SCHEME: dict[str, Any] = {
    "type": "apiKey",
    "in": "header",
    "name": "X-API-Key",
    "description": "Required only when the gateway runs with MSARCH_API_KEY set "
    "(then 401 problem+json without it). WS /ws takes it as ?api_key=.",
}


def public_openapi(api: Sequence[APIRouter]) -> dict[str, Any]:
    """The OpenAPI document of the public API, from the routers of the services behind us."""
    schema = get_openapi(
        title="msarch",
        version=msarch.__version__,
        description=DESCRIPTION,
        routes=[route for router in api for route in router.routes],
    )
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    schema["components"]["securitySchemes"] = {"ApiKey": API_KEY_SCHEME}
    # Optional: {} (no key) or the key; a gateway with MSARCH_API_KEY set answers 401 without it.
    schema["security"] = [{}, {"ApiKey": []}]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            _describe_problems(operation, path, method)
    return schema


def _describe_problems(operation: dict[str, Any], path: str, method: str) -> None:
    problems = {"422": "Invalid input", "503": "A dependency is down; retry after Retry-After"}
    if "{" in path:
        problems["404"] = "Not found"
    if (path, method) == ("/api/batch", "post"):
        problems["400"] = "The batch did not complete (batch_status says why)"
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for status, description in problems.items():
        operation["responses"][status] = {"description": description, "content": content}


def docs_router(api: Sequence[APIRouter], messaging: Sequence[Messaging]) -> APIRouter:
    """/openapi.json and /docs for the public API `api`, /docs/asyncapi for the messages
    the `messaging` services exchange."""
    router = APIRouter(include_in_schema=False)
    asyncapi_documents: dict[Backend, Document] = {}

    @cache
    def schema() -> dict[str, Any]:  # built on first use, not when the gateway starts
        return public_openapi(api)

    @router.get("/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(schema())

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="msarch API",
            swagger_js_url=f"{SWAGGER_UI_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI_URL}/swagger-ui.css",
            swagger_favicon_url="/client/favicon.svg",
            # No badge from the online validator: the page must not reach out.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get("/docs/asyncapi.json")
    def asyncapi_json(  # not async: the first build is CPU work, run in the thread pool
        settings: SettingsDep, backend: Annotated[Backend | None, Query()] = None
    ) -> JSONResponse:
        """The configured backend's bindings, or those of `?backend=rabbit|nats`."""
        backend = backend or backend_of(settings.broker_url)
        if backend not in asyncapi_documents:  # built on first use, like the OpenAPI
            asyncapi_documents[backend] = system_document(messaging, settings, backend)
        return JSONResponse(asyncapi_documents[backend])

    @router.get("/docs/asyncapi")
    async def asyncapi_page() -> FileResponse:
        return FileResponse(CLIENT_DIR / "asyncapi.html", media_type="text/html")

    return router


def mount_docs(app: FastAPI, api: Sequence[APIRouter], messaging: Sequence[Messaging]) -> None:
    """The docs routes and the Swagger UI assets; the app needs openapi_url/docs_url=None."""
    app.include_router(docs_router(api, messaging))
    app.mount(SWAGGER_UI_URL, StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")
