"""Fault-injection fixtures: private stacks, private servers, and the figures of each test."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from msarch.settings import SERVICES
from tests.utils.figures import RECORDED, report
from tests.utils.infra import BROKERS
from tests.utils.stack import Stack, running_stack

Figures = Callable[..., str]
StackFactory = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Print this test's figures as one `FIGURES <test>: key=value ...` line."""

    def record(**values: object) -> str:
        return report(request.node.name, **values)

    return record


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RECORDED:
        terminalreporter.section("fault figures")
        for line in RECORDED:
            terminalreporter.write_line(line)
