"""E2E fixtures beyond tests/conftest.py: stacks with an API key, and with Consul discovery."""

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.utils.consul_double import ConsulDouble
from tests.utils.stack import Stack, running_stack

API_KEY = "e2e-secret-6f1c2d"


@pytest.fixture
async def keyed_stack() -> AsyncIterator[Stack]:
    """A stack whose gateway requires MSARCH_API_KEY=API_KEY."""
    async with running_stack(api_key=API_KEY) as stack:
        yield stack


@pytest.fixture
def consul_double() -> Iterator[ConsulDouble]:
    """The Consul test double, running each registered /health check every second."""
    with ConsulDouble(check_every_s=1.0) as double:
        yield double


@pytest.fixture
async def consul_stack(consul_double: ConsulDouble) -> AsyncIterator[Stack]:
    """A stack whose services register in the Consul double and whose gateway resolves there."""
    async with running_stack(consul_url=consul_double.url) as stack:
        yield stack
