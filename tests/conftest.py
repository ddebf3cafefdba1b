"""Fixtures shared by every test, built on the harness (msarch.testing): the backend, private
namespaces and stacks; and the figures of the fault and container tests."""

import atexit
from collections.abc import AsyncIterator

import pytest

from msarch.settings import Settings
from msarch.testing.isolation import BROKERS, delete_namespace, isolated_settings
from msarch.testing.stack import Stack, StackFactory, kill_leftovers, stack_factory
from tests.utils.figures import RECORDED, Figures, report

atexit.register(kill_leftovers)  # a crashed or interrupted run leaves no service behind

BACKEND_INDEPENDENT = "backend_independent"
"""The marker of an e2e test that needs no broker of the machine's (its reason says why)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{BACKEND_INDEPENDENT}(reason): an e2e test that runs once, not on each backend",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every e2e test runs on both backends, unless it says why not."""
    for item in items:
        if item.get_closest_marker("e2e") is None or not isinstance(item, pytest.Function):
            continue
        independent = item.get_closest_marker(BACKEND_INDEPENDENT)
        if independent is not None and not independent.args:
            raise pytest.UsageError(f"{item.nodeid}: {BACKEND_INDEPENDENT} needs a reason")
        if independent is None and "backend" not in item.fixturenames:
            raise pytest.UsageError(
                f"{item.nodeid} does not run on each backend: use a stack fixture (stack, "
                f"private_stack, stack_with, ...) or mark it {BACKEND_INDEPENDENT}(reason)"
            )


@pytest.fixture(scope="session", params=sorted(BROKERS))
def backend(request: pytest.FixtureRequest) -> str:
    """The broker behind the test: every integration test runs on RabbitMQ and on NATS."""
    name: str = request.param
    return name


@pytest.fixture
def stack_with(backend: str) -> StackFactory:
    """Private stacks on the test's backend: `async with stack_with(**settings) as stack`."""
    return stack_factory(backend)


@pytest.fixture(scope="session")
async def stack(backend: str) -> AsyncIterator[Stack]:
    """The five services as processes, in a namespace of their own, shared by a session."""
    async with stack_factory(backend)() as running:
        yield running


@pytest.fixture
async def private_stack(stack_with: StackFactory) -> AsyncIterator[Stack]:
    """A stack for one test that kills or stops services."""
    async with stack_with(batch_timeout_s=8.0, assembly_timeout_s=5.0) as running:
        yield running


@pytest.fixture
async def settings(backend: str) -> AsyncIterator[Settings]:
    """Settings with a fresh namespace, cleaned up after the test."""
    value = isolated_settings(backend)
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
