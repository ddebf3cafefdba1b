"""The Lua scripts of the store and of the gateway's rate limit, one file each, read once when
msarch.storage is imported; `register` puts one on a client with its calls timed.

Each runs atomically in Redis: the event is appended and the projections are
updated together, or nothing is. Nothing is patched into their text; what
they need (the final statuses included) comes in KEYS and ARGV. Each event they append
carries 'version', the payload's schema version: msarch.upcasting.CURRENT_VERSION (a unit test
holds the two together).
"""

import functools
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind, Tracer
from prometheus_client import Histogram
from redis.commands.core import AsyncScript

from msarch import tracing

T = TypeVar("T")

SCRIPT_SECONDS = Histogram(
    "msarch_redis_script_seconds",
    "One Lua script call, sent to answered (the replicas' WAIT included when writes wait)",
    ["service", "script"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


STORE_KEY_VALUE = _read("store_key_value")
REQUEST_BATCH = _read("request_batch")
STAGE_ITEMS = _read("stage_items")
FAIL_BATCH = _read("fail_batch")
KEEP_ASSEMBLING = _read("keep_assembling")
RATE_LIMIT = _read("rate_limit")
TRIM_EVENTS = _read("trim_events")

_SOURCES = {
    "store_key_value": STORE_KEY_VALUE,
    "request_batch": REQUEST_BATCH,
    "stage_items": STAGE_ITEMS,
    "fail_batch": FAIL_BATCH,
    "keep_assembling": KEEP_ASSEMBLING,
    "rate_limit": RATE_LIMIT,
    "trim_events": TRIM_EVENTS,
}


@dataclass(frozen=True)
class Script:
    """A script registered on a client; calling it times the call in
    msarch_redis_script_seconds{service,script} and, inside a sampled trace, is a span of it."""

    name: str
    service: str
    registered: AsyncScript

    @functools.cached_property
    def seconds(self) -> Histogram:
        """This script's series, made on its first call: a service shows the scripts it runs."""
        return SCRIPT_SECONDS.labels(self.service, self.name)

    @functools.cached_property
    def tracer(self) -> Tracer:
        """The service's tracer, looked up on the first call (after the service started it)."""
        return tracing.tracer_of(self.service)

    async def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self.timed(self.registered(keys=keys, args=args))

    async def timed(self, call: Awaitable[T]) -> T:
        """What `call` (this script's, however sent) answers, its time observed."""
        if not tracing.recording():  # no trace of its own: a sweep's call is not one
            return await self._observed(call)
        with self.tracer.start_as_current_span(f"redis {self.name}", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                {
                    "db.system.name": "redis",
                    "db.operation.name": "EVALSHA",
                    "msarch.script": self.name,
                }
            )
            return await self._observed(call)

    async def _observed(self, call: Awaitable[T]) -> T:
        started = time.perf_counter()  # a third of what Histogram.time() costs
        try:
            return await call
        finally:
            self.seconds.observe(time.perf_counter() - started)


def register(client: "aioredis.Redis", name: str, service: str) -> Script:
    """Script `name` (its file's name) on `client`, timed under `service`'s label."""
    return Script(name, service, client.register_script(_SOURCES[name]))
