"""Fixtures shared by every test: a private namespace per run, and the real stack."""

from collections.abc import AsyncIterator

import pytest

from msarch.settings import Settings
from tests.utils.figures import RECORDED, Figures, report
from tests.utils.infra import BROKERS, delete_namespace, isolated_settings
from tests.utils.stack import Stack, running_stack


@pytest.fixture(scope="session", params=sorted(BROKERS))
def backend(request: pytest.FixtureRequest) -> str:
    """The broker behind the test: every integration test runs on RabbitMQ and on NATS."""
    name: str = request.param
    return name


@pytest.fixture(scope="session")
async def stack(backend: str) -> AsyncIterator[Stack]:
    """The five services as processes, in a namespace of their own, shared by a session."""
    async with running_stack(broker_url=BROKERS[backend]) as running:
        yield running


@pytest.fixture
async def private_stack(backend: str) -> AsyncIterator[Stack]:
    """A stack for one test that kills or stops services."""
    async with running_stack(
        broker_url=BROKERS[backend], batch_timeout_s=8.0, assembly_timeout_s=5.0
    ) as running:
        yield running


@pytest.fixture
async def settings(backend: str) -> AsyncIterator[Settings]:
    """Settings with a fresh namespace, cleaned up after the test."""
    value = isolated_settings(broker_url=BROKERS[backend])
    try:
        yield value
    finally:
        await delete_namespace(value.namespace)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Print this test's figures as one `FIGURES <test>: key=value ...` line."""

    def record(**values: object) -> str:
        return report(request.node.name, **values)

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RECORDED:
        terminalreporter.section("figures (fault and container tests)")
        for line in RECORDED:
            terminalreporter.write_line(line)
