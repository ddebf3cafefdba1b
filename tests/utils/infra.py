"""Test isolation on shared servers: a private namespace, free ports, and cleanup of only ours."""

import os
from uuid import uuid4

import redis.asyncio as aioredis

from msarch.bus import create_bus
from msarch.embedded import free_port
from msarch.settings import SERVICES, Settings

TEST_REDIS_URL = os.environ.get("MSARCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
RABBIT_URL = os.environ.get("MSARCH_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS_URL = os.environ.get("MSARCH_TEST_NATS_URL", "nats://127.0.0.1:4222")
BROKERS = {"rabbit": RABBIT_URL, "nats": NATS_URL}
"""Every integration and end-to-end test runs on both backends."""


def new_namespace() -> str:
    return f"test-{uuid4().hex[:12]}-"


def isolated_settings(namespace: str | None = None, **overrides: object) -> Settings:
    """Settings for a private stack: own namespace, own ports, Redis db 9."""
    ports = {f"{s}_port": free_port() for s in SERVICES}
    values: dict[str, object] = {
        "namespace": namespace or new_namespace(),
        "redis_url": TEST_REDIS_URL,
        "broker_url": RABBIT_URL,
        "graceful_timeout_s": 10.0,
        **ports,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


def env_of(settings: Settings) -> dict[str, str]:
    """The MSARCH_* environment that makes a child process use these settings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"MSARCH_{name.upper()}"] = str(value)
    return env


async def delete_namespace(namespace: str) -> None:
    """Remove the Redis keys and broker objects of one namespace, nothing else."""
    assert namespace.startswith("test-"), "only test namespaces are deleted"
    client = aioredis.Redis.from_url(TEST_REDIS_URL)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{namespace}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()
    await _drop_broker_objects(namespace)


async def _drop_broker_objects(namespace: str) -> None:
    # The bus names its queues, exchanges and streams: it deletes them too.
    for url in BROKERS.values():
        bus = create_bus(Settings(namespace=namespace, broker_url=url), service="cleanup")
        try:
            await bus.drop_namespace()
        finally:
            await bus.stop()
