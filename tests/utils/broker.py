"""Talking to the real broker from tests: raw publishes and reading dead letters."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from msarch.bus import Bus
from msarch.settings import Settings


@asynccontextmanager
async def connected_bus(settings: Settings) -> AsyncIterator[Bus]:
    """A bus of the test's own, connected but consuming nothing."""
    bus = Bus(settings, service="test")
    await bus.broker.connect()
    try:
        yield bus
    finally:
        await bus.broker.stop()
