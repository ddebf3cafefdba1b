"""The bus's naming of broker objects (msarch.bus), on both backends, with nothing connected.

`broker_objects()` is what msarch.testing.isolation.delete_namespace deletes; these tests hold it to
what the bus actually subscribes on, so the two cannot drift apart.
"""

from typing import Any, Literal, overload

import pytest
from faststream.nats.subscriber.usecases.stream_basic import StreamSubscriber
from faststream.rabbit.subscriber import RabbitSubscriber

from msarch import channels
from msarch.bus import Bus, create_bus
from msarch.bus.nats import NatsBus
from msarch.bus.rabbit import RabbitBus
from msarch.settings import Settings

URLS = {"rabbit": "amqp://guest:guest@127.0.0.1:5672/", "nats": "nats://127.0.0.1:4222"}


@overload
def _bus(backend: Literal["rabbit"], namespace: str) -> RabbitBus: ...
@overload
def _bus(backend: Literal["nats"], namespace: str) -> NatsBus: ...
@overload
def _bus(backend: str, namespace: str) -> Bus[Any]: ...
def _bus(backend: str, namespace: str) -> Bus[Any]:
    bus = create_bus(Settings(namespace=namespace, broker_url=URLS[backend]), service="test")
    assert isinstance(bus, {"rabbit": RabbitBus, "nats": NatsBus}[backend])
    return bus


def _rabbit_subscribers(bus: RabbitBus) -> list[RabbitSubscriber]:
    subscribers = [s for s in bus.broker.subscribers if isinstance(s, RabbitSubscriber)]
    assert len(subscribers) == len(bus.broker.subscribers)
    return subscribers


def _stream_subscribers(bus: NatsBus) -> list[StreamSubscriber]:
    subscribers = [s for s in bus.broker.subscribers if isinstance(s, StreamSubscriber)]
    assert len(subscribers) == len(bus.broker.subscribers), "every NATS subscriber is JetStream"
    return subscribers


async def _handler(body: dict[str, Any]) -> None:
    """A handler that does nothing: only its registration matters here."""


@pytest.mark.parametrize("backend", URLS)
def test_every_broker_object_is_in_the_namespace(backend: str, namespace: str) -> None:
    names = [name for kind in _bus(backend, namespace).broker_objects().values() for name in kind]
    assert names
    assert all(name.startswith(namespace) for name in names), names


def test_rabbit_subscribes_on_the_objects_it_names(namespace: str) -> None:
    bus = _bus("rabbit", namespace)
    for channel in channels.ALL:
        bus.subscriber(channel)(_handler)
    objects = bus.broker_objects()
    for subscriber in _rabbit_subscribers(bus):
        if subscriber.exchange.name:  # a broadcast: the instance's own queue on the fanout
            assert subscriber.exchange.name in objects["exchange"]
        else:
            assert subscriber.queue.name in objects["queue"]
    for channel in channels.ALL:
        assert bus.dead_letter_queue(channel).name in objects["queue"]
    assert bus.dead_exchange.name in objects["exchange"]


def test_nats_subscribes_on_the_streams_it_names(namespace: str) -> None:
    bus = _bus("nats", namespace)
    for channel in channels.ALL:
        bus.subscriber(channel)(_handler)
    streams = bus.broker_objects()["stream"]
    assert {s.stream.name for s in _stream_subscribers(bus)} <= set(streams)
    assert bus.dead.name in streams


@pytest.mark.parametrize("backend", URLS)
async def test_drop_namespace_never_drops_the_unnamespaced_objects(backend: str) -> None:
    with pytest.raises(ValueError, match="MSARCH_NAMESPACE"):
        await _bus(backend, "").drop_namespace()
