"""Unit fixtures: a private namespace in Redis db 9, and the real handlers on FastStream's
test brokers.

No service process runs here. Redis is the real server (the Lua scripts are
the code under test); the broker is FastStream's in-memory TestRabbitBroker or
TestNatsBroker (tests/utils/broker.py: in_memory): a handler test takes the
`backend` fixture (tests/conftest.py) and runs once per backend.
Only keys under the test's own namespace are ever deleted, found with SCAN.
"""

import itertools
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient

from apps.gateway.app import create_gateway
from msarch.service import Messaging, Runtime, build_runtime
from msarch.settings import SERVICES, Settings
from msarch.storage import Store
from msarch.testing.isolation import TEST_REDIS_URL, delete_keys, free_port, new_namespace
from tests.utils.fixture_api import RuntimeFactory, StoreFactory

# Unit tests run the bus on FastStream's test brokers: nothing connects to these URLs.
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
BROKER_URLS = {"rabbit": RABBIT_URL, "nats": "nats://127.0.0.1:4222"}


@pytest.fixture
def namespace() -> str:
    """A prefix no other test run uses; everything this test writes lives under it."""
    return new_namespace()


@pytest.fixture
def unit_settings(namespace: str) -> Settings:
    return Settings(namespace=namespace, redis_url=TEST_REDIS_URL, broker_url=RABBIT_URL)


@pytest.fixture
async def store(unit_settings: Settings) -> AsyncIterator[Store]:
    """A Store on the real Redis (db 9) in the test's namespace; its keys are removed after."""
    value = Store.from_url(unit_settings.redis_url, unit_settings.namespace)
    try:
        yield value
    finally:
        await delete_keys(value.redis, unit_settings.namespace)
        await value.close()


@pytest.fixture
def fresh_store(store: Store, namespace: str) -> StoreFactory:
    """A new, empty Store on every call (one per Hypothesis example), under the test's prefix."""
    counter = itertools.count()
    return lambda: Store(store.redis, f"{namespace}{next(counter)}-")


@pytest.fixture
def make_runtime(unit_settings: Settings, store: Store) -> RuntimeFactory:
    """Runtime(service) as create_service builds it (its dependencies too), nothing connected,
    on the bus of `backend` ('rabbit' or 'nats')."""

    def make(
        service: str, dependencies: Sequence[type[Any]] = (), *, backend: str = "rabbit"
    ) -> Runtime:
        settings = unit_settings.model_copy(update={"broker_url": BROKER_URLS[backend]})
        return build_runtime(Messaging(service, dependencies=dependencies), settings, store)

    return make


@pytest.fixture
def gateway() -> Iterator[TestClient]:
    """A gateway with the API key "the-key" whose services run nowhere (free ports)."""
    ports = {f"{s}_port": free_port() for s in SERVICES}
    settings = Settings(api_key="the-key").model_copy(update=ports)
    with TestClient(create_gateway(settings)) as client:
        yield client
