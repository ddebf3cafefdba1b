"""The bus's series (msarch.bus.metrics) on the real brokers, RabbitMQ and NATS: publishes and
their confirms counted per channel, failures included, and the lag of a consumer that is behind.

Each test's bus has a service name of its own, so its series are its own in the registry."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from prometheus_client import REGISTRY

from msarch import channels
from msarch.bus import Bus, PublishError, create_bus
from msarch.bus.metrics import keep_lag_current
from msarch.messages import KeyValue, item_of
from msarch.settings import Settings
from msarch.testing.stack import wait_for
from tests.utils.broker import connected_bus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus[Any]]:
    """A connected bus of a service no other test is, consuming nothing."""
    bus = create_bus(settings, service=f"test-{uuid4().hex[:8]}")
    await bus.connect()
    try:
        yield bus
    finally:
        await bus.stop()


def sample(name: str, bus: Bus[Any], channel: channels.Channel, **labels: str) -> float | None:
    wanted = {"service": bus.service, "channel": bus.name(channel), **labels}
    return REGISTRY.get_sample_value(name, wanted)


def confirms(bus: Bus[Any], channel: channels.Channel) -> tuple[float | None, ...]:
    """(published, confirmed, failed) of a channel."""
    return (
        sample("msarch_messages_published_total", bus, channel),
        sample("msarch_publish_confirms_total", bus, channel, outcome="confirmed"),
        sample("msarch_publish_confirms_total", bus, channel, outcome="failed"),
    )


async def test_a_declared_channel_has_its_series_at_zero(bus: Bus[Any]) -> None:
    assert confirms(bus, channels.EVENT) == (None, None, None)
    bus.publisher(channels.EVENT)
    assert confirms(bus, channels.EVENT) == (0, 0, 0)


async def test_each_confirmed_publish_counts_once(bus: Bus[Any]) -> None:
    for _ in range(3):
        kv = KeyValue(key="k", value="v")
        await bus.publish(channels.EVENT, kv, message_id=str(kv.id))
    batch_id = uuid4()
    items = ((f"{batch_id}:{i}", item_of(batch_id, i, 5)) for i in range(5))
    assert await bus.publish_stream(channels.BATCH, items) == 5
    assert confirms(bus, channels.EVENT) == (3, 3, 0)
    assert confirms(bus, channels.BATCH) == (5, 5, 0)


async def test_a_publish_without_its_confirm_counts_as_failed(bus: Bus[Any]) -> None:
    await bus.stop()  # the connection is gone: no confirm can come
    with pytest.raises(PublishError):
        await bus.publish(channels.EVENT, KeyValue(key="k", value="v"), timeout_s=2)
    assert confirms(bus, channels.EVENT) == (1, 0, 1)


async def test_the_lag_gauge_shows_the_messages_a_busy_consumer_has_not_taken(
    settings: Settings,
) -> None:
    """One message at a time (prefetch 1), held by its handler: the other two wait, then none."""
    one_at_a_time = settings.model_copy(update={"prefetch": 1})
    async with connected_bus(one_at_a_time) as sender:
        for _ in range(3):
            kv = KeyValue(key="k", value="v")
            await sender.publish(channels.EVENT, kv, message_id=str(kv.id))
    bus = create_bus(one_at_a_time, service=f"test-{uuid4().hex[:8]}")
    release = asyncio.Event()

    @bus.subscriber(channels.EVENT)
    async def held(kv: KeyValue) -> None:
        await release.wait()

    await bus.start()
    keeping = asyncio.create_task(keep_lag_current(bus, every_s=0.1))
    try:
        await wait_for(lambda: sample("msarch_consumer_lag", bus, channels.EVENT) == 2, 20)
        release.set()
        await wait_for(lambda: sample("msarch_consumer_lag", bus, channels.EVENT) == 0, 20)
    finally:
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
        await bus.stop()
