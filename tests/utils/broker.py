"""Talking to the broker from tests: the real one (raw publishes, dead letters), and a bus's
broker in FastStream's test client (TestRabbitBroker, TestNatsBroker) for handler tests."""

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Self
from uuid import uuid4

from faststream import Context
from faststream.message import StreamMessage
from faststream.nats import TestNatsBroker
from faststream.rabbit import ExchangeType, RabbitExchange, RabbitQueue, TestRabbitBroker

from msarch.bus import Bus, create_bus
from msarch.bus.base import DEAD_SUFFIX
from msarch.bus.nats import MSG_ID, NatsBus
from msarch.bus.rabbit import RabbitBus
from msarch.channels import Channel, Delivery
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


Incoming = Annotated[StreamMessage[Any], Context("message")]
"""A test subscriber's parameter for the message itself (RabbitMessage, NatsMessage alike)."""


class InMemoryBroker(ABC):
    """A bus's FastStream broker run in FastStream's test client (no server), and how a test
    reaches the bus's channels there: a handler test is written once and runs on each backend.

    Subscribers of the test's own are added before entering; inside, `broker` is the
    patched broker and every publish is handled in the publisher's task.
    """

    def __init__(self, bus: Bus[Any]) -> None:
        self.bus = bus
        self.broker: Any = None

    @abstractmethod
    def _testing(self) -> Any:
        """FastStream's test client around the bus's broker."""

    async def __aenter__(self) -> Self:
        self._client = self._testing()
        self.broker = await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(*exc)

    @abstractmethod
    def listen(self, channel: Channel, handler: Callable[..., Awaitable[Any]]) -> None:
        """A subscriber of the test's own on a broadcast channel (as one more instance)."""

    @abstractmethod
    def listen_dead(self, channel: Channel, handler: Callable[..., Awaitable[Any]]) -> None:
        """A subscriber on the channel's dead letters."""

    @abstractmethod
    async def send(
        self,
        channel: Channel,
        body: Any,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        headers: dict[str, Any] | None = None,
        delivery: int = 1,
    ) -> None:
        """Deliver a message on a channel as the broker would the `delivery`-th time."""

    @staticmethod
    @abstractmethod
    def message_id(message: StreamMessage[Any]) -> str | None:
        """The id a message was published with (bus.publish's message_id)."""


class InMemoryRabbit(InMemoryBroker):
    """TestRabbitBroker: queues and fanout exchanges by name."""

    bus: RabbitBus

    def _testing(self) -> Any:
        return TestRabbitBroker(self.bus.broker)

    def listen(self, channel: Channel, handler: Callable[..., Awaitable[Any]]) -> None:
        exchange = RabbitExchange(self.bus.name(channel), type=ExchangeType.FANOUT)
        queue = RabbitQueue(f"{self.bus.name(channel)}.test-{uuid4().hex[:6]}", auto_delete=True)
        self.bus.broker.subscriber(queue, exchange)(handler)

    def listen_dead(self, channel: Channel, handler: Callable[..., Awaitable[Any]]) -> None:
        self.bus.broker.subscriber(self.bus.dead_letter_queue(channel), self.bus.dead_exchange)(
            handler
        )

    async def send(
        self,
        channel: Channel,
        body: Any,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        headers: dict[str, Any] | None = None,
        delivery: int = 1,
    ) -> None:
        all_headers = dict(headers or {})
        if delivery > 1:  # quorum queues count redeliveries in this header
            all_headers["x-delivery-count"] = delivery - 1
        name = self.bus.name(channel)
        destination: dict[str, Any] = (
            {"queue": name}
            if channel.delivery is Delivery.WORK
            else {"exchange": RabbitExchange(name, type=ExchangeType.FANOUT)}
        )
        await self.broker.publish(
            body,
            message_id=message_id,
            correlation_id=correlation_id,
            headers=all_headers,
            **destination,
        )

    @staticmethod
    def message_id(message: StreamMessage[Any]) -> str | None:
        return message.message_id


class InMemoryNats(InMemoryBroker):
    """TestNatsBroker: subjects on the bus's streams.

    It delivers a plain message, not a JetStream one: `send` gives it the reply
    subject JetStream would (`$JS.ACK.<stream>.<consumer>.<delivered>...`), so the
    bus reads the delivery count from its metadata as on the server.
    """

    bus: NatsBus

    def _testing(self) -> Any:
        return TestNatsBroker(self.bus.broker)

    def listen(self, channel: Channel, handler: Callable[..., Awaitable[Any]]) -> None:
        self.bus.broker.subscriber(self.bus.name(channel), stream=self.bus.broadcast)(handler)

    def listen_dead(self, channel: Channel, handler: Callable[..., Awaitable[Any]]) -> None:
        subject = self.bus.name(channel) + DEAD_SUFFIX
        self.bus.broker.subscriber(subject, stream=self.bus.dead)(handler)

    async def send(
        self,
        channel: Channel,
        body: Any,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        headers: dict[str, Any] | None = None,
        delivery: int = 1,
    ) -> None:
        all_headers = {k: str(v) for k, v in (headers or {}).items()}
        if message_id is not None:
            all_headers[MSG_ID] = message_id
        stream = self.bus.work if channel.delivery is Delivery.WORK else self.bus.broadcast
        await self.broker.publish(
            body,
            subject=self.bus.name(channel),
            stream=stream.name,
            correlation_id=correlation_id,
            headers=all_headers,
            reply_to=f"$JS.ACK.{stream.name}.{channel.name}.{delivery}.1.1.{time.time_ns()}.0",
        )

    @staticmethod
    def message_id(message: StreamMessage[Any]) -> str | None:
        return (message.headers or {}).get(MSG_ID)


def in_memory(bus: Bus[Any]) -> InMemoryBroker:
    """The bus's broker in FastStream's test client of its backend (enter it to start)."""
    if isinstance(bus, RabbitBus):
        return InMemoryRabbit(bus)
    if isinstance(bus, NatsBus):
        return InMemoryNats(bus)
    raise TypeError(f"no FastStream test client for {type(bus).__name__}")
