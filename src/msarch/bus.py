"""The message bus: the one place that knows which broker is behind the channels.

Services ask for `bus.subscriber(channel)` and `bus.publish(channel, message)`;
everything broker-specific (queues, exchanges, confirms, dead-lettering) is here.

Reliability rules applied to every channel on RabbitMQ:
- work channels (`event`, `batch`) are durable quorum queues with a delivery
  limit and at-least-once dead-lettering into `<channel>.dead`;
- broadcast channels (`forward_roundtrip`, `batch_reply`) are fanout exchanges,
  each running instance has its own queue;
- messages are persistent and every publish waits for the publisher confirm;
  an unroutable work message raises instead of vanishing;
- a message is acked only after its handler returned; a message that does not
  decode or validate, or whose handler keeps failing, is dead-lettered with the
  reason in the `x-msarch-reason` header, never silently dropped.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar
from uuid import uuid4

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractExchange, AbstractRobustChannel
from faststream import AckPolicy
from faststream._internal.middlewares import BaseMiddleware
from faststream.exceptions import AckMessage
from faststream.message import StreamMessage
from faststream.rabbit import (
    Channel as AmqpChannel,
)
from faststream.rabbit import (
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from msarch.channels import Channel, Delivery
from msarch.settings import Settings

log = logging.getLogger("msarch.bus")

REASON_HEADER = "x-msarch-reason"
CHANNEL_HEADER = "x-msarch-channel"
EVENT_ID_HEADER = "x-msarch-event-id"
"""The position in the event log of the fact a message announces."""
DEAD_SUFFIX = ".dead"

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


CONSUMED = Counter(
    "msarch_messages_consumed_total", "Messages handled", ["service", "channel", "outcome"]
)
HANDLING = Histogram("msarch_message_handling_seconds", "Handler time", ["service", "channel"])
PUBLISHED = Counter("msarch_messages_published_total", "Messages confirmed", ["service", "channel"])

# Errors that no redelivery can fix: the message itself is wrong.
_POISON = (ValidationError, json.JSONDecodeError, UnicodeDecodeError)


class PublishError(RuntimeError):
    """The broker did not confirm a message: it is not safe to report success."""


class Bus:
    """The broker behind the channels, as one object a service holds."""

    def __init__(self, settings: Settings, *, service: str) -> None:
        self.settings = settings
        self.service = service
        self.instance = f"{service}-{uuid4().hex[:8]}"
        self.prefix = settings.namespace
        self.broker = RabbitBroker(
            settings.broker_url,
            graceful_timeout=settings.graceful_timeout_s,
            fail_fast=True,
            reconnect_interval=1.0,
            default_channel=AmqpChannel(
                prefetch_count=settings.prefetch,
                publisher_confirms=True,
                on_return_raises=True,
            ),
            app_id=service,
            logger=logging.getLogger(f"msarch.{service}.broker"),
            # One line per message is DEBUG: at a million items a batch, INFO would drown.
            log_level=logging.DEBUG,
            middlewares=(_ConsumeMiddleware.factory(self),),
        )
        self._dead_exchange = RabbitExchange(
            f"{self.prefix}msarch.dead", type=ExchangeType.DIRECT, durable=True
        )

    # -- names -----------------------------------------------------------------

    def name(self, channel: Channel) -> str:
        return f"{self.prefix}{channel.name}"

    def dead_letter_queue(self, channel: Channel) -> RabbitQueue:
        name = self.name(channel)
        return RabbitQueue(
            f"{name}{DEAD_SUFFIX}",
            queue_type=QueueType.QUORUM,
            durable=True,
            routing_key=name,
        )

    def _work_queue(self, channel: Channel) -> RabbitQueue:
        name = self.name(channel)
        return RabbitQueue(
            name,
            queue_type=QueueType.QUORUM,
            durable=True,
            arguments={
                "x-delivery-limit": self.settings.delivery_limit,
                "x-dead-letter-exchange": self._dead_exchange.name,
                "x-dead-letter-routing-key": name,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )

    def _broadcast_exchange(self, channel: Channel) -> RabbitExchange:
        return RabbitExchange(self.name(channel), type=ExchangeType.FANOUT, durable=True)

    def _instance_queue(self, channel: Channel) -> RabbitQueue:
        # One queue per running instance; it goes away with the instance.
        return RabbitQueue(
            f"{self.name(channel)}.{self.instance}",
            durable=False,
            exclusive=True,
            auto_delete=True,
            arguments={
                "x-dead-letter-exchange": self._dead_exchange.name,
                "x-dead-letter-routing-key": self.name(channel),
            },
        )

    # -- consuming ---------------------------------------------------------------

    def subscriber(self, channel: Channel) -> Callable[[Handler], Handler]:
        """Register a handler for a channel; it is acked only after it returns."""
        if channel.delivery is Delivery.WORK:
            sub = self.broker.subscriber(
                self._work_queue(channel),
                ack_policy=AckPolicy.NACK_ON_ERROR,
                no_reply=True,
            )
        else:
            sub = self.broker.subscriber(
                self._instance_queue(channel),
                self._broadcast_exchange(channel),
                ack_policy=AckPolicy.NACK_ON_ERROR,
                no_reply=True,
            )

        def register(handler: Handler) -> Handler:
            sub(handler)
            return handler

        return register

    def current_message(self) -> StreamMessage[Any]:
        """The message being handled (its ids and headers), inside a handler.

        Read from the context directly: a `Context()` parameter costs a thread hop
        per message in fast_depends, a third of the store's time at batch rates.
        """
        message: StreamMessage[Any] = self.broker.context.get_local("message")
        return message

    # -- publishing --------------------------------------------------------------

    async def publish(
        self,
        channel: Channel,
        message: BaseModel,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        """Publish and wait for the broker's confirm; raises PublishError otherwise."""
        try:
            if channel.delivery is Delivery.WORK:
                await self.broker.publish(
                    message,
                    queue=self.name(channel),
                    persist=True,
                    mandatory=True,
                    message_id=message_id,
                    correlation_id=correlation_id,
                    headers=headers,
                    timeout=self.settings.upstream_timeout_s,
                )
            else:
                # A broadcast with no listener is not an error: nobody is connected.
                await self.broker.publish(
                    message,
                    exchange=self._broadcast_exchange(channel),
                    persist=True,
                    mandatory=False,
                    message_id=message_id,
                    correlation_id=correlation_id,
                    headers=headers,
                    timeout=self.settings.upstream_timeout_s,
                )
        except Exception as exc:
            raise PublishError(f"{self.name(channel)}: {exc!r}") from exc

    async def publish_stream(
        self,
        channel: Channel,
        messages: Iterable[tuple[str, BaseModel]],
        *,
        correlation_id: str | None = None,
        on_confirmed: Callable[[int], None] | None = None,
    ) -> int:
        """Publish many (message_id, message) pairs with pipelined confirms.

        At most `publish_window` confirms are outstanding at once, so memory stays
        flat however long `messages` is; returns how many were confirmed.
        """
        if channel.delivery is not Delivery.WORK:
            raise ValueError("publish_stream is for work channels")
        exchange = await self._default_exchange()
        routing_key = self.name(channel)
        window = asyncio.Semaphore(self.settings.publish_window)
        failures: list[BaseException] = []
        confirmed = 0

        async def send(message_id: str, body: bytes) -> None:
            nonlocal confirmed
            try:
                await exchange.publish(
                    Message(
                        body,
                        content_type="application/json",
                        delivery_mode=DeliveryMode.PERSISTENT,
                        message_id=message_id,
                        correlation_id=correlation_id,
                        app_id=self.service,
                    ),
                    routing_key=routing_key,
                    mandatory=True,
                    timeout=self.settings.upstream_timeout_s,
                )
                confirmed += 1
                if on_confirmed is not None:
                    on_confirmed(confirmed)
            except BaseException as exc:  # collected and re-raised below
                failures.append(exc)
            finally:
                window.release()

        tasks: set[asyncio.Task[None]] = set()
        for message_id, message in messages:
            await window.acquire()
            if failures:
                window.release()
                break
            task = asyncio.create_task(send(message_id, message.model_dump_json().encode()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        if failures:
            raise PublishError(f"{routing_key}: {failures[0]!r}") from failures[0]
        return confirmed

    async def _default_exchange(self) -> AbstractExchange:
        channel: AbstractRobustChannel = await self._publish_channel()
        return channel.default_exchange

    async def _publish_channel(self) -> AbstractRobustChannel:
        if getattr(self, "_stream_channel", None) is None:
            connection = self.broker._connection  # the bus owns the broker
            if connection is None:
                raise PublishError("broker is not connected")
            self._stream_channel: AbstractRobustChannel | None = await connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
        assert self._stream_channel is not None
        return self._stream_channel

    # -- dead letters ------------------------------------------------------------

    async def dead_letter(
        self, channel_name: str, body: bytes, headers: dict[str, Any], reason: str
    ) -> None:
        """Route a message that cannot be processed to `<channel>.dead` with the reason."""
        await self.broker.publish(
            body,
            exchange=self._dead_exchange,
            routing_key=channel_name,
            persist=True,
            mandatory=True,
            headers={**headers, REASON_HEADER: reason[:2000], CHANNEL_HEADER: channel_name},
            timeout=self.settings.upstream_timeout_s,
        )

    async def declare(self, channels: Iterable[Channel]) -> None:
        """Declare every channel and its dead-letter queue, producers and consumers alike.

        A producer declares too, so that a message published before its consumer
        ever started waits in the queue instead of being unroutable.
        """
        dead = await self.broker.declare_exchange(self._dead_exchange)
        for channel in channels:
            queue = await self.broker.declare_queue(self.dead_letter_queue(channel))
            await queue.bind(dead, routing_key=self.name(channel))
            if channel.delivery is Delivery.WORK:
                await self.broker.declare_queue(self._work_queue(channel))
            else:
                await self.broker.declare_exchange(self._broadcast_exchange(channel))

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        from msarch import channels

        await self.broker.connect()
        await self.declare(channels.ALL)
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()

    async def ping(self) -> bool:
        return bool(await self.broker.ping(timeout=2.0))

    async def iter_dead_letters(self, channel: Channel) -> AsyncIterator[tuple[bytes, str]]:
        """Drain `<channel>.dead` (for operators and tests): yields (body, reason)."""
        queue = await self.broker.declare_queue(self.dead_letter_queue(channel))
        while (message := await queue.get(fail=False, timeout=5)) is not None:
            headers = message.headers or {}
            reason = str(headers.get(REASON_HEADER) or _death_reason(headers))
            await message.ack()
            yield message.body, reason


def _death_reason(headers: dict[str, Any]) -> str:
    reason = headers.get("x-first-death-reason")
    return f"broker: {reason}" if reason else "unknown"


class _ConsumeMiddleware(BaseMiddleware[Any, Any]):
    """Counts and times every message; dead-letters poison with the reason.

    (FastStream's Prometheus middleware does more, at a quarter of the store's
    throughput; these two metrics are what an operator of this system reads.)
    """

    bus: Bus

    @classmethod
    def factory(cls, bus: Bus) -> Callable[..., "_ConsumeMiddleware"]:
        def make(msg: Any, /, **kwargs: Any) -> _ConsumeMiddleware:
            middleware = cls(msg, **kwargs)
            middleware.bus = bus
            return middleware

        return make

    async def consume_scope(
        self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        channel = _channel_of(msg)
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await call_next(msg)
            outcome = "ok"
            return result
        except _POISON as exc:
            await self._dead_letter(msg, channel, f"invalid message: {_one_line(exc)}")
            outcome = "dead-lettered"
        except Exception as exc:
            deliveries = int((msg.headers or {}).get("x-delivery-count", 0)) + 1
            if deliveries < self.bus.settings.delivery_limit:
                raise  # nacked and redelivered
            await self._dead_letter(
                msg, channel, f"handler failed {deliveries} times, last error: {_one_line(exc)}"
            )
            outcome = "dead-lettered"
        finally:
            CONSUMED.labels(self.bus.service, channel, outcome).inc()
            HANDLING.labels(self.bus.service, channel).observe(time.perf_counter() - started)
        raise AckMessage

    async def _dead_letter(self, msg: StreamMessage[Any], channel_name: str, reason: str) -> None:
        log.warning(
            "dead-lettering message",
            extra={"message_id": msg.message_id, "channel": channel_name, "reason": reason},
        )
        headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("x-")}
        await self.bus.dead_letter(channel_name, msg.body, headers, reason)


def _channel_of(msg: StreamMessage[Any]) -> str:
    """The namespaced channel a message came from: its exchange, or its queue."""
    raw = msg.raw_message
    return str(raw.exchange or raw.routing_key or "")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:1000] or type(exc).__name__
