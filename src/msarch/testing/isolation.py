"""Isolation on shared servers: a namespace per run, free ports, and clean-up of only ours.

Everything a test or a benchmark writes lives under a namespace starting with "test-": its Redis
keys (found with SCAN, in db 9 by default) and its queues, exchanges and streams on both brokers.
Clean-up deletes that namespace and nothing else.
"""

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import redis.asyncio as aioredis

from msarch.bus import create_bus
from msarch.embedded import free_port
from msarch.settings import SERVICES, Settings

__all__ = [
    "BACKENDS",
    "BROKERS",
    "DEVELOPER_PORTS",
    "NATS_URL",
    "RABBIT_URL",
    "TEST_REDIS_URL",
    "delete_keys",
    "delete_namespace",
    "env_of",
    "free_port",
    "isolated_settings",
    "namespace_cleanup",
    "new_namespace",
]

TEST_REDIS_URL = os.environ.get("MSARCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
RABBIT_URL = os.environ.get("MSARCH_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS_URL = os.environ.get("MSARCH_TEST_NATS_URL", "nats://127.0.0.1:4222")
BROKERS = {"rabbit": RABBIT_URL, "nats": NATS_URL}
"""Backend name -> the machine's broker; every integration and end-to-end test runs on both."""
BACKENDS = tuple(BROKERS)
DEVELOPER_PORTS = range(8000, 8005)
"""The default ports of a developer's `just up`: never taken by a private stack."""
NAMESPACE_PREFIX = "test-"


def new_namespace(prefix: str = NAMESPACE_PREFIX) -> str:
    """A namespace no other run uses; `prefix` must start with "test-" to be cleaned up."""
    if not prefix.startswith(NAMESPACE_PREFIX):
        raise ValueError(f"namespace prefix {prefix!r} must start with {NAMESPACE_PREFIX!r}")
    return f"{prefix}{uuid4().hex[:12]}-"


def isolated_settings(backend: str = "rabbit", **overrides: Any) -> Settings:
    """Settings for a private stack on `backend`: own namespace, own free ports, Redis db 9.

    `overrides` are Settings fields (broker_url, redis_url, api_key, ...) and win over all that.
    """
    if backend not in BROKERS:
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BROKERS)}")
    values: dict[str, Any] = {
        "namespace": new_namespace(),
        "redis_url": TEST_REDIS_URL,
        "broker_url": BROKERS[backend],
        "graceful_timeout_s": 10.0,
        **{f"{s}_port": free_port() for s in SERVICES},
        **overrides,
    }
    settings = Settings(**values)
    taken = {settings.port_of(s) for s in SERVICES} & set(DEVELOPER_PORTS)
    if taken:
        raise ValueError(f"ports {sorted(taken)} belong to `just up`, not to a private stack")
    return settings


def env_of(settings: Settings) -> dict[str, str]:
    """The MSARCH_* environment that makes a child process use these settings."""
    return {
        f"MSARCH_{name.upper()}": str(value)
        for name, value in settings.model_dump().items()
        if value is not None
    }


def _check(namespace: str) -> None:
    if not namespace.startswith(NAMESPACE_PREFIX):
        raise ValueError(f"refusing to delete {namespace!r}: only test namespaces are deleted")


async def delete_keys(client: "aioredis.Redis", namespace: str) -> int:
    """Unlink every key of one test namespace (found with SCAN); how many there were."""
    _check(namespace)
    deleted = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{namespace}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += await client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += await client.unlink(*batch)
    return deleted


async def delete_namespace(namespace: str, redis_url: str = TEST_REDIS_URL) -> None:
    """Remove the Redis keys and the broker objects (both backends) of one test namespace."""
    _check(namespace)
    client = aioredis.Redis.from_url(redis_url)
    try:
        await delete_keys(client, namespace)
    finally:
        await client.aclose()
    for url in BROKERS.values():
        # The bus names its queues, exchanges and streams: it deletes them too.
        bus = create_bus(Settings(namespace=namespace, broker_url=url), service="cleanup")
        try:
            await bus.drop_namespace()
        finally:
            await bus.stop()


@asynccontextmanager
async def namespace_cleanup(namespace: str) -> AsyncIterator[str]:
    """Delete the namespace on the way out, even when cancelled (Ctrl-C) or failing."""
    try:
        yield namespace
    finally:
        await asyncio.shield(delete_namespace(namespace))
