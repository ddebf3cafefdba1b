"""The container suite: private compose projects of the local stack (RabbitMQ, the default,
shared by the tests of test_compose_stack.py; NATS, the `nats` profile, for its own module).
The cluster stack is tests/clusters' business.

Needs a Docker engine (`just test` starts one: tests/prepare.sh); without one the suite fails
and says what is missing, it never skips. The stack is built from the local images
(infra/local/images.sh reuses them when nothing changed) and removed with its volumes after.
"""

from collections.abc import AsyncIterator

import pytest

from tests.utils.compose import ComposeStack, running_compose


@pytest.fixture(scope="package")
async def compose_stack() -> AsyncIterator[ComposeStack]:
    """compose.yaml as it is: RabbitMQ. Removed once this package's tests are done: idle, its
    eight containers and their health checks (RabbitMQ's starts an Erlang VM) took CPU from
    every suite after it."""
    async for stack in running_compose(ComposeStack()):
        yield stack


@pytest.fixture(scope="module")
async def nats_compose_stack() -> AsyncIterator[ComposeStack]:
    """compose.yaml with the `nats` profile, every service on NATS JetStream."""
    async for stack in running_compose(
        ComposeStack(broker_url="nats://nats:4222", profiles=("nats",))
    ):
        yield stack
