"""Talking to the real broker from tests: raw publishes and reading dead letters."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from msarch.bus import Bus, create_bus
from msarch.settings import Settings


@asynccontextmanager
async def connected_bus(settings: Settings) -> AsyncIterator[Bus[Any]]:
    """A bus of the test's own, connected but consuming nothing."""
    bus = create_bus(settings, service="test")
    await bus.connect()
    try:
        yield bus
    finally:
        await bus.stop()
