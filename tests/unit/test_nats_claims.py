"""NATS JetStream's claim on the messages being handled (msarch.bus.nats): in-progress acks
while a handler works, none once it is done; a message id stored once.

The first tests run on TestNatsBroker, which hands the handler a message whose
acks do nothing: they show which messages the bus keeps claimed and when. It
cannot emulate JetStream's ack_wait, redelivery or duplicate window, so the
tests marked `integration` run against the real NATS server (MSARCH_TEST_NATS_URL,
nats://127.0.0.1:4222 by default) in a namespace of their own, deleted after.
"""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import pytest
from faststream.nats.testing import PatchedMessage

from msarch import channels
from msarch.bus import create_bus
from msarch.bus import nats as nats_bus
from msarch.bus.nats import NatsBus
from msarch.messages import KeyValue
from msarch.settings import Settings
from msarch.testing.isolation import NATS_URL, delete_namespace, isolated_settings
from msarch.testing.stack import wait_for
from tests.utils.broker import in_memory

CLAIM_EVERY_S = 0.03
"""ack_wait / 3 with ack_wait shortened to 0.09 s for the in-memory tests."""


def _nats_bus(settings: Settings) -> NatsBus:
    bus = create_bus(settings, service="store")
    assert isinstance(bus, NatsBus)
    return bus


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """In-progress acks sent, by message id, with ack_wait shortened."""
    monkeypatch.setattr(nats_bus, "ACK_WAIT_S", CLAIM_EVERY_S * 3)
    sent: Counter[str] = Counter()

    async def in_progress(self: PatchedMessage) -> None:
        sent[(self.headers or {})[nats_bus.MSG_ID]] += 1

    monkeypatch.setattr(PatchedMessage, "in_progress", in_progress)
    return sent


@asynccontextmanager
async def _keeping_claimed(bus: NatsBus) -> AsyncIterator[None]:
    # bus.start() would connect first; the keeper is the part under test here.
    keeper = asyncio.create_task(bus._keep_claimed())
    try:
        yield
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_a_message_is_claimed_while_handled_and_not_after(
    namespace: str, claims: Counter[str]
) -> None:
    bus = _nats_bus(Settings(namespace=namespace, broker_url=NATS_URL))
    release, started = asyncio.Event(), asyncio.Event()

    @bus.subscriber(channels.EVENT)
    async def held(kv: KeyValue) -> None:
        if kv.key == "held":
            started.set()
            await release.wait()  # say, Redis down and the write retried

    held_kv, quick_kv = KeyValue(key="held", value="v"), KeyValue(key="quick", value="v")
    async with in_memory(bus) as wire:
        await wire.send(channels.EVENT, quick_kv, message_id=str(quick_kv.id))
        async with _keeping_claimed(bus):
            handling = asyncio.create_task(
                wire.send(channels.EVENT, held_kv, message_id=str(held_kv.id))
            )
            try:
                await asyncio.wait_for(started.wait(), 5)
                await wait_for(lambda: claims[str(held_kv.id)] >= 3, 5, CLAIM_EVERY_S / 3)
            finally:
                release.set()
                await asyncio.wait_for(handling, 5)
            after = claims[str(held_kv.id)]
            await asyncio.sleep(CLAIM_EVERY_S * 4)

    assert claims[str(held_kv.id)] == after, "an acked message is no longer claimed"
    assert str(quick_kv.id) not in claims, "a message handled at once needs no claim"
    assert bus._handling == {}


async def test_a_failed_handler_releases_its_claim(namespace: str, claims: Counter[str]) -> None:
    bus = _nats_bus(Settings(namespace=namespace, broker_url=NATS_URL))

    @bus.subscriber(channels.EVENT)
    async def failing(kv: KeyValue) -> None:
        raise ConnectionError("Redis refused (simulated)")

    kv = KeyValue(key="k", value="v")
    async with in_memory(bus) as wire, _keeping_claimed(bus):
        with pytest.raises(ConnectionError):  # nacked: JetStream redelivers it
            await wire.send(channels.EVENT, kv, message_id=str(kv.id))
        await asyncio.sleep(CLAIM_EVERY_S * 4)
    assert bus._handling == {}
    assert claims[str(kv.id)] == 0


# -- on the real NATS server ---------------------------------------------------------------


@pytest.fixture
async def nats_settings() -> AsyncIterator[Settings]:
    settings = isolated_settings("nats")
    try:
        yield settings
    finally:
        await delete_namespace(settings.namespace)


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_a_message_held_past_ack_wait_is_not_redelivered(
    nats_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JetStream redelivers after ack_wait unless the in-progress acks keep the claim."""
    ack_wait_s = 1.0
    monkeypatch.setattr(nats_bus, "ACK_WAIT_S", ack_wait_s)
    bus = _nats_bus(nats_settings)
    deliveries: list[int] = []
    done = asyncio.Event()

    @bus.subscriber(channels.EVENT)
    async def slow(kv: KeyValue) -> None:
        deliveries.append(bus.deliveries(bus.current_message()))
        await asyncio.sleep(ack_wait_s * 3)
        done.set()

    await bus.start()
    try:
        kv = KeyValue(key="k", value="v")
        await bus.publish(channels.EVENT, kv, message_id=str(kv.id))
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.sleep(ack_wait_s * 1.5)  # a redelivery would have come by now
    finally:
        await bus.stop()
    assert deliveries == [1]


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_a_message_id_published_twice_is_delivered_once(nats_settings: Settings) -> None:
    """Nats-Msg-Id: the stream drops a re-publish within its duplicate window."""
    bus = _nats_bus(nats_settings)
    received: list[Any] = []

    @bus.subscriber(channels.EVENT)
    async def handler(kv: KeyValue) -> None:
        received.append((kv, bus.current_message().headers.get(nats_bus.MSG_ID)))

    kv, other = KeyValue(key="k", value="v"), KeyValue(key="k2", value="v2")
    await bus.start()
    try:
        for _ in range(3):
            await bus.publish(channels.EVENT, kv, message_id=str(kv.id))
        await bus.publish(channels.EVENT, other, message_id=str(other.id))
        await wait_for(lambda: len(received) >= 2, 20)
        await asyncio.sleep(0.5)  # a duplicate would be right behind
    finally:
        await bus.stop()
    assert sorted(received, key=lambda r: r[0].key) == [(kv, str(kv.id)), (other, str(other.id))]


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_two_instances_share_a_work_channel_and_each_gets_every_broadcast(
    nats_settings: Settings,
) -> None:
    """One durable pull consumer per work channel, one consumer per instance on broadcasts."""
    buses = [_nats_bus(nats_settings) for _ in range(2)]
    work: list[Counter[str]] = [Counter(), Counter()]
    broadcast: list[list[str]] = [[], []]
    for bus, seen, heard in zip(buses, work, broadcast, strict=True):
        _count_into(bus, seen, heard)

    for bus in buses:
        await bus.start()
    try:
        keys = [f"w{n}" for n in range(200)]
        await buses[0].publish_stream(
            channels.EVENT, ((str(uuid4()), KeyValue(key=k, value="v")) for k in keys)
        )
        await wait_for(lambda: sum(sum(c.values()) for c in work) >= len(keys), 30)
        shout = KeyValue(key="everyone", value="v")
        await buses[1].publish(channels.FORWARD_ROUNDTRIP, shout, message_id=str(shout.id))
        await wait_for(lambda: all(broadcast), 20)
        await asyncio.sleep(0.5)
    finally:
        for bus in buses:
            await bus.stop()
    assert sorted((work[0] + work[1]).elements()) == sorted(keys), "each once, none lost"
    assert broadcast == [["everyone"], ["everyone"]]


def _count_into(bus: NatsBus, work: Counter[str], broadcast: list[str]) -> None:
    # A function per instance: a handler's parameters are the message's fields.
    @bus.subscriber(channels.EVENT)
    async def on_work(kv: KeyValue) -> None:
        work[kv.key] += 1

    @bus.subscriber(channels.FORWARD_ROUNDTRIP)
    async def on_broadcast(kv: KeyValue) -> None:
        broadcast.append(kv.key)


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_every_fetch_timeout_is_nats_own(nats_settings: Settings) -> None:
    """nats-py's fetch sometimes timed out with a plain TimeoutError (37 of 400 fetches with
    timeouts of 0.2-4 ms, measured on 2026-12-02), which FastStream's batch pull loop does not
    catch: the batch fetched so far was dropped until ack_wait. msarch.bus.nats makes every
    fetch timeout nats.errors.TimeoutError."""
    bus = _nats_bus(nats_settings)
    await bus.connect()
    try:
        js = await bus._jetstream()
        subject = bus.name(channels.EVENT)
        subscription = await js.pull_subscribe(
            subject, durable=f"{bus.prefix}fetch-probe", stream=bus.work.name
        )
        timeouts: Counter[str] = Counter()
        for attempt in range(200):
            try:
                await subscription.fetch(batch=10, timeout=0.0002 + (attempt % 20) * 0.0002)
            except TimeoutError as exc:
                timeouts[type(exc).__module__] += 1
    finally:
        await bus.stop()
    assert timeouts, "the fetches timed out"
    assert set(timeouts) == {"nats.errors"}, timeouts
