"""E2E fixtures beyond tests/conftest.py: stacks with an API key, and with Consul discovery,
each on the test's backend."""

from collections.abc import AsyncIterator, Iterator

import pytest

from msarch.testing.stack import Stack, StackFactory
from tests.utils.consul_double import ConsulDouble
from tests.utils.fixture_api import API_KEY


@pytest.fixture
async def keyed_stack(stack_with: StackFactory) -> AsyncIterator[Stack]:
    """A stack whose gateway requires MSARCH_API_KEY=API_KEY."""
    async with stack_with(api_key=API_KEY) as stack:
        yield stack


@pytest.fixture
def consul_double() -> Iterator[ConsulDouble]:
    """The Consul test double, running each registered /health check every second."""
    with ConsulDouble(check_every_s=1.0) as double:
        yield double


@pytest.fixture
async def consul_stack(
    stack_with: StackFactory, consul_double: ConsulDouble
) -> AsyncIterator[Stack]:
    """A stack whose services register in the Consul double and whose gateway resolves there."""
    async with stack_with(consul_url=consul_double.url) as stack:
        yield stack
