"""The bus's naming of broker objects (msarch.bus), on both backends, with nothing connected.

`broker_objects()` is what tests/utils/infra.py deletes; these tests hold it to
what the bus actually subscribes on, so the two cannot drift apart.
"""

from typing import Any

import pytest

from msarch import channels
from msarch.bus import Bus, create_bus
from msarch.settings import Settings

URLS = {"rabbit": "amqp://guest:guest@127.0.0.1:5672/", "nats": "nats://127.0.0.1:4222"}


def _bus(backend: str, namespace: str) -> Bus[Any]:
    return create_bus(Settings(namespace=namespace, broker_url=URLS[backend]), service="test")


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
    for subscriber in bus.broker.subscribers:
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
    assert {s.stream.name for s in bus.broker.subscribers} <= set(streams)
    assert bus.dead.name in streams


@pytest.mark.parametrize("backend", URLS)
async def test_drop_namespace_never_drops_the_unnamespaced_objects(backend: str) -> None:
    with pytest.raises(ValueError, match="MSARCH_NAMESPACE"):
        await _bus(backend, "").drop_namespace()
