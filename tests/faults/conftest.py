"""Fault-injection fixtures: private stacks and private servers (figures: tests/conftest.py)."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from msarch.settings import SERVICES
from tests.utils.figures import Figures
from tests.utils.infra import BROKERS
from tests.utils.stack import Stack, running_stack

__all__ = ["Figures", "StackFactory"]

StackFactory = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
def stack_with(backend: str) -> StackFactory:
    """A private stack (own namespace, ports, and the given settings) on the test's backend."""

    @asynccontextmanager
    async def running(
        services: tuple[str, ...] = SERVICES, **overrides: object
    ) -> AsyncIterator[Stack]:
        values: dict[str, object] = {"broker_url": BROKERS[backend], **overrides}
        async with running_stack(services, **values) as stack:
            yield stack

    return running


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    """Where a private server keeps its data and log (removed with tmp_path)."""
    return tmp_path / "server"
