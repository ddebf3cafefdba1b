"""Service bootstrap: every service is built the same way by `create_service`.

A service is a FastAPI app (HTTP, /health, /metrics) whose lifespan connects
the bus and Redis, starts the service's subscribers and background tasks, and
on shutdown lets in-flight messages finish (and be acked) before it closes.
"""

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar, cast

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import HTTPConnection

from msarch import problems
from msarch.bus import Bus, create_bus
from msarch.bus.metrics import keep_lag_current
from msarch.channels import Channel
from msarch.discovery import registered
from msarch.limits import BodyLimit
from msarch.logs import configure_logging, summarised
from msarch.observability import RequestContext
from msarch.settings import Settings, get_settings
from msarch.storage import Store
from msarch.tracing import Tracing, is_trace_id

T = TypeVar("T")


@dataclass
class Runtime:
    """What a running service holds: its settings, bus and store, and its own dependencies."""

    name: str
    settings: Settings
    bus: Bus[Any]
    store: Store
    tracing: Tracing
    tasks: list["asyncio.Task[None]"] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on SIGTERM/SIGINT, before the server drains: a request waiting on another
    service can answer at once instead of being cut off at the graceful timeout."""
    dependencies: dict[type[Any], Any] = field(default_factory=dict)
    """One instance per class (the websocket Hub, the batch Waiters), instead of module
    globals: handlers and routes of this service share it, a test builds a fresh one."""

    def dependency(self, kind: type[T]) -> T:
        """This service's instance of `kind`, as declared in its Messaging(dependencies=...)."""
        if kind not in self.dependencies:
            raise LookupError(
                f"the {self.name} service has no {kind.__name__}: "
                f"declare it in Messaging(dependencies=[...])"
            )
        return cast(T, self.dependencies[kind])


Subscribe = Callable[[Runtime], None]
Background = Callable[[Runtime], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Messaging:
    """What a service sends and receives on the bus, declared once in its handlers.py:
    create_service wires it, and the AsyncAPI document is generated from it (on a bus
    of its own, see msarch.asyncapi), so the document is what the service registers."""

    service: str
    publishes: Sequence[Channel] = ()
    """The channels the service sends on: one FastStream publisher object each."""
    subscribe: Subscribe | None = None
    """Registers the service's subscribers on `runtime.bus`."""
    dependencies: Sequence[type[Any]] = ()
    """The service's own state (built once, with no arguments), shared by its handlers and
    routes through `Runtime.dependency`."""


def build_runtime(messaging: Messaging, settings: Settings, store: Store) -> Runtime:
    """A Runtime with the service's publishers and subscribers registered, nothing connected."""
    bus = create_bus(settings, service=messaging.service)
    tracing = Tracing.start(messaging.service, settings, instance=bus.instance)
    bus.tracer = tracing.tracer
    for channel in messaging.publishes:
        bus.publisher(channel)
    runtime = Runtime(
        name=messaging.service,
        settings=settings,
        bus=bus,
        store=store,
        tracing=tracing,
        dependencies={kind: kind() for kind in messaging.dependencies},
    )
    if messaging.subscribe is not None:
        messaging.subscribe(runtime)
    return runtime


async def runtime_of(connection: HTTPConnection) -> Runtime:
    """The service's Runtime, for HTTP routes and websocket routes alike."""
    runtime: Runtime = connection.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]


async def check_health(runtime: Runtime) -> dict[str, str]:
    """'ok' or what is wrong, for the broker and Redis."""

    async def probe(check: Callable[[], Awaitable[bool]]) -> str:
        try:
            async with asyncio.timeout(2):
                return "ok" if await check() else "unreachable"
        except Exception as exc:
            return f"unreachable: {type(exc).__name__}"

    broker, redis = await asyncio.gather(probe(runtime.bus.ping), probe(runtime.store.ping))
    return {"broker": broker, "redis": redis}


def health_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/health", summary="Broker and Redis usable?")
    async def health(runtime: RuntimeDep) -> JSONResponse:
        checks = await check_health(runtime)
        healthy = all(v == "ok" for v in checks.values())
        body = {"service": runtime.name, "status": "ok" if healthy else "unhealthy", **checks}
        return JSONResponse(body, status_code=200 if healthy else 503)

    return router


def traces_router(tracing: Tracing) -> APIRouter:
    """GET /traces and /traces/{trace_id}: the traces this instance recorded lately."""
    router = APIRouter(tags=["operations"])

    @router.get("/traces", summary="The traces this instance recorded lately, newest first")
    async def recent(limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
        return {
            "service": tracing.service,
            "instance": tracing.instance,
            "traces": tracing.ring.recent(limit),
        }

    @router.get("/traces/{trace_id}", summary="This instance's spans of one trace")
    async def one(trace_id: str) -> dict[str, Any]:
        spans = tracing.ring.spans_of(checked_trace_id(trace_id))
        if spans is None:
            raise problems.Problem(
                404, "Not Found", f"{tracing.instance} keeps no span of trace {trace_id}"
            )
        return {"trace_id": trace_id, "spans": spans}

    return router


def checked_trace_id(trace_id: str) -> str:
    """A W3C trace id (32 lowercase hex digits), else 422."""
    if not is_trace_id(trace_id):
        raise problems.Problem(
            422, "Invalid input", f"a trace id is 32 lowercase hex digits, not {trace_id!r}"
        )
    return trace_id


def notice_stop(runtime: Runtime) -> None:
    """Chain onto the server's SIGTERM/SIGINT handlers (uvicorn's) to set runtime.stopping."""
    if threading.current_thread() is not threading.main_thread():
        return  # an in-process test client: no signals to notice
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(runtime.stopping.set)
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)


def create_app(name: str, tracing: Tracing | None = None, **fastapi_options: Any) -> FastAPI:
    """The FastAPI app every service starts from: problems, request ids and traces, limits,
    metrics. (`tracing`: the service's, else one of its own with this process's settings.)"""
    tracing = tracing or Tracing.start(name, get_settings())
    app = FastAPI(title=f"msarch {name}", **fastapi_options)
    app.state.tracing = tracing
    problems.install(app)
    app.include_router(traces_router(tracing))

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit)
    app.add_middleware(RequestContext, service=name, tracer=tracing.tracer)
    return app


def create_service(
    service: Messaging | str,
    *,
    routers: Sequence[APIRouter] = (),
    background: Sequence[Background] = (),
    settings: Settings | None = None,
    **fastapi_options: Any,
) -> FastAPI:
    """Build a service: its routes, its bus as `service` declares it (nothing registered
    when only a name is given, as tests of routes alone do), and its lifecycle."""
    messaging = Messaging(service) if isinstance(service, str) else service
    name = messaging.service
    settings = settings or get_settings()
    configure_logging(name, settings.log_level, settings.log_format)
    log = logging.getLogger(f"msarch.{name}")
    store = Store.from_settings(settings, max_connections=settings.prefetch + 64, service=name)
    runtime = build_runtime(messaging, settings, store)
    bus = runtime.bus

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = runtime
        notice_stop(runtime)
        await bus.start()
        for job in background:
            runtime.tasks.append(asyncio.create_task(job(runtime), name=f"{name}:{job.__name__}"))
        runtime.tasks.append(asyncio.create_task(keep_lag_current(bus), name=f"{name}:lag"))
        log.info("started", extra={"instance": bus.instance})
        try:
            # Deregistered first on the way out, so the gateway stops sending before we drain.
            async with registered(name, settings, settings.port_of(name)), summarised(name):
                yield
        finally:
            log.info("stopping: letting in-flight messages finish")
            await bus.stop()
            for task in runtime.tasks:
                task.cancel()
            await asyncio.gather(*runtime.tasks, return_exceptions=True)
            await store.close()
            log.info("stopped")
            runtime.tracing.shutdown()

    app = create_app(name, runtime.tracing, lifespan=lifespan, **fastapi_options)
    app.state.runtime = runtime
    app.include_router(health_router())
    for router in routers:
        app.include_router(router)
    return app
