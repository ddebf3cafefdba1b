"""What every backend provides: the bus a service holds, and the hooks a backend fills in."""

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Protocol, TypeVar
from urllib.parse import urlsplit
from uuid import uuid4

from faststream import AckPolicy, ContextRepo
from faststream.message import StreamMessage
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer
from pydantic import BaseModel

from msarch import tracing
from msarch.bus.batches import BatchHandler, Coalescer, Received
from msarch.bus.consume import consume_middleware
from msarch.bus.metrics import PublishCounts
from msarch.channels import Channel, Delivery
from msarch.settings import Settings

REASON_HEADER = "x-msarch-reason"
CHANNEL_HEADER = "x-msarch-channel"
EVENT_ID_HEADER = "x-msarch-event-id"
"""The position in the event log of the fact a message announces."""
DEAD_SUFFIX = ".dead"
MESSAGE_ID_HEADER = "x-msarch-message-id"
"""A dead letter's original message id: what it is sent back with when requeued."""
DEAD_AT_HEADER = "x-msarch-dead-at"
DELIVERIES_HEADER = "x-msarch-deliveries"
DEAD_LETTER_HEADERS = {
    REASON_HEADER,
    CHANNEL_HEADER,
    MESSAGE_ID_HEADER,
    DEAD_AT_HEADER,
    DELIVERIES_HEADER,
}
"""Added when a message is dead-lettered; taken off again when it is requeued."""

ObjectKind = Literal["queue", "exchange", "stream"]

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True)
class DeadLetter:
    """A message in `<channel>.dead`, as an operator sees it."""

    id: str
    """Its handle for requeue and drop: the dead-letter stream's sequence (NATS), or the
    dead letter's own message id (RabbitMQ)."""
    channel: str
    reason: str
    dead_at: str | None
    deliveries: int | None
    message_id: str | None
    """The id it had on its channel, and has again when requeued (idempotency holds)."""
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    """Its own headers, without the dead-letter ones: what it is requeued with."""

    def preview(self, chars: int = 120) -> str:
        text = self.body.decode("utf-8", "replace")
        return text if len(text) <= chars else text[:chars] + "…"


def dead_letter_headers(
    headers: dict[str, Any], *, reason: str, channel: str, message_id: str | None, deliveries: int
) -> dict[str, str]:
    """A message's headers as it goes to `<channel>.dead`: what an operator needs added."""
    return {
        **{k: str(v) for k, v in headers.items()},
        REASON_HEADER: reason[:2000],
        CHANNEL_HEADER: channel,
        MESSAGE_ID_HEADER: message_id or "",
        DEAD_AT_HEADER: datetime.now(UTC).isoformat(timespec="milliseconds"),
        DELIVERIES_HEADER: str(deliveries),
    }


_BROKERS_OWN = ("x-death", "x-first-death", "x-last-death", "x-delivery-count", "Nats-")
"""Headers a broker sets itself: RabbitMQ's x-death and delivery count (which each look at
the queue raises), NATS's Nats-* (Nats-Expected-Stream would name the dead-letter stream)."""


def read_dead_letter(
    letter_id: str,
    channel: Channel,
    body: bytes,
    headers: dict[str, Any],
    *,
    broker_reason: str = "unknown",
    broker_message_id: str | None = None,
    broker_deliveries: Any = None,
) -> DeadLetter:
    """A dead letter from what its backend holds: what dead_letter_headers added, else what
    the broker itself says (a message its queue dead-lettered), and its own headers besides."""
    deliveries = headers.get(DELIVERIES_HEADER) or broker_deliveries
    return DeadLetter(
        id=letter_id,
        channel=channel.name,
        reason=str(headers.get(REASON_HEADER) or broker_reason),
        dead_at=str(headers[DEAD_AT_HEADER]) if DEAD_AT_HEADER in headers else None,
        deliveries=int(deliveries) if deliveries not in (None, "") else None,
        message_id=str(headers.get(MESSAGE_ID_HEADER) or broker_message_id or "") or None,
        body=body,
        headers={
            k: str(v)
            for k, v in headers.items()
            if k not in DEAD_LETTER_HEADERS and not k.startswith(_BROKERS_OWN)
        },
    )


class PublishError(RuntimeError):
    """The broker did not confirm a message: it is not safe to report success."""


class Broker(Protocol):
    """What the bus asks of a FastStream broker (RabbitBroker, NatsBroker): public API only."""

    @property
    def context(self) -> ContextRepo: ...

    async def connect(self) -> Any: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ping(self, timeout: float | None) -> bool: ...  # noqa: ASYNC109 (FastStream's)

    def subscriber(self, *args: Any, **kwargs: Any) -> Any: ...

    def publisher(self, *args: Any, **kwargs: Any) -> Any: ...

    async def publish(self, *args: Any, **kwargs: Any) -> Any: ...


BrokerT = TypeVar("BrokerT", bound=Broker)


class Bus(ABC, Generic[BrokerT]):
    """The broker behind the channels, as one object a service holds."""

    broker: BrokerT
    """The FastStream broker (for FastStream's TestBroker in unit tests)."""
    system: str
    """The backend's name as OpenTelemetry's messaging.system says it."""

    def __init__(self, settings: Settings, *, service: str) -> None:
        self.settings = settings
        self.service = service
        self.instance = f"{service}-{uuid4().hex[:8]}"
        self.prefix = settings.namespace
        self._connected = False
        self._publishers: dict[str, Any] = {}
        """The FastStream publisher object of each channel this service declared it sends on."""
        self._publish_counts: dict[str, PublishCounts] = {}
        self.subscribed: list[Channel] = []
        """The channels this service consumes (their lag is in /metrics)."""
        self.tracer: Tracer = trace.NoOpTracer()
        """The service's tracer (msarch.tracing), set when its runtime is built."""
        self.traced_in_groups: set[str] = set()
        """Namespaced channels whose messages get no span each: their handler traces them
        in groups (the store stages batch items together)."""

    def _broker_options(self) -> dict[str, Any]:
        """What every backend's FastStream broker is built with, besides its own."""
        return {
            "graceful_timeout": self.settings.graceful_timeout_s,
            "logger": logging.getLogger(f"msarch.{self.service}.broker"),
            # One line per message is DEBUG: at a million items a batch, INFO would drown.
            "log_level": logging.DEBUG,
            "middlewares": (consume_middleware(self),),
        }

    def name(self, channel: Channel) -> str:
        """The channel's namespaced name: queue/exchange on RabbitMQ, subject on NATS."""
        return f"{self.prefix}{channel.name}"

    def current_message(self) -> StreamMessage[Any]:
        """The message being handled (its ids and headers), inside a handler.

        Read from the context directly: a `Context()` parameter costs a thread hop
        per message in fast_depends, a third of the store's time at batch rates.
        """
        message: StreamMessage[Any] = self.broker.context.get_local("message")
        return message

    def subscriber(
        self, channel: Channel, /, *, span_each: bool = True, **options: Any
    ) -> Callable[[Handler], Handler]:
        """Register a handler for a channel; the message is acked only after it returns.

        A handler that raises nacks its message (redelivered, then dead-lettered by
        the consume middleware); what a handler returns is sent nowhere. Each message is
        handled in a span of the trace it came with, unless `span_each` is False (the
        handler traces what it does with many messages at once).
        """
        if not span_each:
            self.traced_in_groups.add(self.name(channel))
        subscribe = self.broker.subscriber(
            **{
                **self._subscription(channel),
                "ack_policy": AckPolicy.NACK_ON_ERROR,
                "no_reply": True,
                "title": channel.name,
                "description": _about(channel),
                **options,  # a backend's own way (NATS's batch pull)
            }
        )

        self.subscribed.append(channel)

        def register(handler: Handler) -> Handler:
            subscribe(handler)
            return handler  # the plain function, not FastStream's wrapper: services call it

        return register

    def batch_subscriber(self, channel: Channel) -> Callable[[BatchHandler], BatchHandler]:
        """Register a handler of many messages of a work channel at once (msarch.bus.batches):
        each message is acked once its outcome is None, nacked or dead-lettered otherwise, as
        with `subscriber`; a message that is not a valid payload never reaches the handler
        (dead-lettered with the reason). The handler traces what it does, in groups.

        Here the messages being handled concurrently are coalesced; a backend that can fetch
        many at once hands over what it fetched instead."""
        payload = channel.payload

        def register(handler: BatchHandler) -> BatchHandler:
            coalescer = Coalescer(handler, self._settle_done)

            async def on_message(body: BaseModel) -> None:
                message = self.current_message()
                headers = message.headers or {}
                await coalescer.add(
                    Received(
                        body,
                        message.message_id,
                        message.correlation_id,
                        headers.get(tracing.TRACEPARENT),
                    ),
                    message,
                )

            on_message.__annotations__["body"] = payload  # what FastStream validates
            self.subscriber(channel, span_each=False, **self._batch_subscription(channel))(
                on_message
            )
            return handler

        return register

    def _batch_subscription(self, channel: Channel) -> dict[str, Any]:
        """What a backend adds to the `broker.subscriber` arguments of a batch subscriber."""
        return {}

    async def _settle_done(self, messages: list[StreamMessage[Any]]) -> None:
        """Settle the done messages of one batch handler call together, before their handlers
        return (msarch.bus.batches.Settle). Here nothing: each is acked on its own."""

    @abstractmethod
    def _subscription(self, channel: Channel) -> dict[str, Any]:
        """Where and how a channel is consumed: the backend's `broker.subscriber` arguments."""

    def publisher(self, channel: Channel) -> None:
        """Declare that this service sends on `channel`: a FastStream publisher object,
        so the service's AsyncAPI document knows it, and `publish` goes through it.

        Before start(). publish_stream stays on its pipelined raw path (see there); its
        channel is declared all the same, for the document.
        """
        self._counts(channel)  # its series are in /metrics from the start
        if channel.name not in self._publishers:
            self._publishers[channel.name] = self.broker.publisher(
                **self._publisher_destination(channel),
                title=channel.name,
                description=_about(channel),
                schema=channel.payload,
            )

    @abstractmethod
    def _publisher_destination(self, channel: Channel) -> dict[str, Any]:
        """Where a channel's publisher object sends: the backend's `broker.publisher` arguments."""

    async def publish(
        self,
        channel: Channel,
        message: BaseModel,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        headers: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Publish and wait for the broker's confirmation (at most timeout_s, default
        MSARCH_UPSTREAM_TIMEOUT_S); PublishError otherwise.

        Through the channel's publisher object if this service declared one; otherwise
        (operators, tests, benchmarks) undocumented, through the broker: the same
        arguments either way, so the same message on the wire.
        """
        publisher = self._publishers.get(channel.name, self.broker)
        counts = self._counts(channel)
        counts.published.inc()
        try:
            with self._publish_span(channel, message_id):
                await publisher.publish(
                    message,
                    correlation_id=correlation_id,
                    timeout=timeout_s or self.settings.upstream_timeout_s,
                    **self._publication(channel, message_id, tracing.with_current_trace(headers)),
                )
        except Exception as exc:
            counts.failed.inc()
            raise PublishError(f"{self.name(channel)}: {exc!r}") from exc
        except asyncio.CancelledError as exc:
            counts.failed.inc()
            if not confirm_lost(exc):
                raise  # this task is cancelled (shutdown): let it end
            raise PublishError(
                f"{self.name(channel)}: the connection closed before the confirm"
            ) from exc
        counts.confirmed.inc()

    @contextlib.contextmanager
    def _publish_span(self, channel: Channel, message_id: str | None) -> Iterator[Span]:
        """A producer span around a publish, current while it lasts: the traceparent the
        message carries names it."""
        destination = self.name(channel)
        with self.tracer.start_as_current_span(
            f"{destination} publish", kind=SpanKind.PRODUCER
        ) as span:
            if span.is_recording():
                span.set_attributes(
                    {
                        "messaging.system": self.system,
                        "messaging.destination.name": destination,
                        "messaging.operation.type": "send",
                        "msarch.instance": self.instance,
                        **({"messaging.message.id": message_id} if message_id else {}),
                    }
                )
            yield span

    def _counts(self, channel: Channel) -> PublishCounts:
        """The publish counters of a channel, made on first use."""
        counts = self._publish_counts.get(channel.name)
        if counts is None:
            counts = self._publish_counts[channel.name] = PublishCounts.of(
                self.service, self.name(channel)
            )
        return counts

    @abstractmethod
    def _publication(
        self, channel: Channel, message_id: str | None, headers: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Where a message on a channel goes and what it carries: the backend's
        `broker.publish` arguments besides the message, correlation id and timeout."""

    async def publish_stream(
        self,
        channel: Channel,
        messages: Iterable[tuple[str, BaseModel]],
        *,
        correlation_id: str | None = None,
        retry_for_s: float | None = None,
    ) -> int:
        """Publish many (message id, message) pairs on a work channel, confirms pipelined.

        On the driver directly, not the channel's publisher object: FastStream awaits
        each confirm in turn, this keeps many outstanding (batch rates depend on it).

        At most MSARCH_PUBLISH_WINDOW confirmations are outstanding, so memory
        stays flat however long `messages` is; returns how many were confirmed. A message
        the broker did not confirm is sent again for up to `retry_for_s` (default
        MSARCH_PUBLISH_RETRY_S) before a PublishError.
        """
        if channel.delivery is not Delivery.WORK:
            raise ValueError("publish_stream is for work channels")
        with self._publish_span(channel, None) as span:
            # One span for the stream: every message carries its traceparent (the same one).
            sender = await self._confirmed_sender(
                channel, correlation_id, tracing.current_headers()
            )
            send = self._counts(channel).counting(sender)
            encoded = ((mid, message.model_dump_json().encode()) for mid, message in messages)
            try:
                retrying = self.settings.publish_retry_s if retry_for_s is None else retry_for_s
                confirmed = await pipelined(encoded, send, self.settings.publish_window, retrying)
            except PublishError as exc:
                raise PublishError(f"{self.name(channel)}: {exc}") from exc
            span.set_attribute("messaging.batch.message_count", confirmed)
            return confirmed

    @abstractmethod
    async def _confirmed_sender(
        self, channel: Channel, correlation_id: str | None, headers: dict[str, str]
    ) -> Callable[[str, bytes], Awaitable[None]]:
        """A function that publishes (message id, JSON body) on a work channel, with
        `headers` (the trace's), and returns once the broker confirmed it: the unit
        publish_stream pipelines."""

    @abstractmethod
    async def publish_raw(
        self,
        channel: Channel,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Publish bytes as they are, confirmed (requeued dead letters; poison tests); a
        backend adds the current traceparent to `headers` unless they hold one
        (tracing.with_current_trace)."""

    @abstractmethod
    async def dead_letter(
        self,
        channel_name: str,
        body: bytes,
        headers: dict[str, Any],
        reason: str,
        message_id: str | None = None,
        deliveries: int = 1,
    ) -> None:
        """Route a message that cannot be processed to `<channel>.dead` with the reason, its
        message id, when and after how many deliveries (dead_letter_headers)."""

    @abstractmethod
    def iter_dead_letters(self, channel: Channel) -> AsyncIterator[tuple[bytes, str]]:
        """Take the messages out of `<channel>.dead`: yields (body, reason)."""

    @abstractmethod
    async def dead_letters(self, channel: Channel, limit: int = 100) -> list[DeadLetter]:
        """The first `limit` messages of `<channel>.dead`, left where they are."""

    @abstractmethod
    async def dead_letter_count(self, channel: Channel) -> int:
        """How many messages `<channel>.dead` holds."""

    @abstractmethod
    async def consumer_lag(self, channel: Channel) -> int:
        """How many messages of a channel this service subscribed to wait for its consumer."""

    @abstractmethod
    async def requeue_dead(self, channel: Channel, ids: Collection[str] | None) -> list[str]:
        """Send dead letters back onto their channel with their original message id (all of
        them when `ids` is None), each removed once the broker confirmed it; their ids."""

    @abstractmethod
    async def drop_dead(self, channel: Channel, ids: Collection[str]) -> list[str]:
        """Remove dead letters for good; the ids that were there."""

    async def connect(self) -> None:
        """Connect and declare every channel, without consuming."""
        await self.broker.connect()
        self._connected = True
        await self._declare()

    @abstractmethod
    async def _declare(self) -> None:
        """Declare every channel's broker objects, producers and consumers alike.

        A producer declares too, so that a message published before its consumer
        ever started waits for it instead of being unroutable.
        """

    @abstractmethod
    def broker_objects(self) -> dict[ObjectKind, list[str]]:
        """The name of every queue, exchange or stream this bus declares, by kind:
        the one place they are worked out (instance queues aside: they go with
        their instance)."""

    async def drop_namespace(self) -> None:
        """Delete this namespace's broker objects and what they hold (connects
        without declaring; stop() after): how tests and stacks sharing one broker
        clean up. Never the un-namespaced objects of a production stack."""
        if not self.prefix:
            raise ValueError("drop_namespace: MSARCH_NAMESPACE is empty, nothing of ours to drop")
        await self._drop()

    @abstractmethod
    async def _drop(self) -> None:
        """Delete every object of broker_objects() that exists."""

    def _require_connected(self) -> None:
        """Before using the driver's connection: after stop() it is gone, and
        `broker.connect()` would silently open a new one."""
        if not self._connected:
            raise PublishError("broker is not connected")

    async def start(self) -> None:
        await self.connect()
        await self.broker.start()

    async def stop(self) -> None:
        self._connected = False
        await self.broker.stop()

    async def ping(self) -> bool:
        return bool(await self.broker.ping(timeout=2.0))

    @contextlib.contextmanager
    def handling(self, msg: StreamMessage[Any]) -> Iterator[None]:
        """While a handler works on a message (a backend may keep it claimed meanwhile)."""
        yield

    @abstractmethod
    def deliveries(self, msg: StreamMessage[Any]) -> int:
        """How many times this message has been delivered, this time included."""

    @abstractmethod
    def channel_of(self, msg: StreamMessage[Any]) -> str:
        """The namespaced channel a message came from."""


async def pipelined(
    items: Iterable[tuple[str, bytes]],
    send: Callable[[str, bytes], Awaitable[None]],
    window: int,
    retry_for_s: float = 0.0,
) -> int:
    """Run `send` for each item with at most `window` in flight; stop at the first failure.

    An item whose send fails is sent again, with backoff, for up to `retry_for_s`: the broker
    node went away and the connection is moving to another. Sending twice is safe, since every
    item carries its message id and consumers are idempotent.
    """
    slots = asyncio.Semaphore(window)
    failures: list[BaseException] = []
    confirmed = 0

    async def one(message_id: str, body: bytes) -> None:
        nonlocal confirmed
        try:
            await retried(lambda: send(message_id, body), retry_for_s)
            confirmed += 1
        except BaseException as exc:  # collected and re-raised below
            failures.append(exc)
        finally:
            slots.release()

    tasks: set[asyncio.Task[None]] = set()
    try:
        for message_id, body in items:
            await slots.acquire()
            if failures:
                slots.release()
                break
            task = asyncio.create_task(one(message_id, body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    except asyncio.CancelledError:  # the caller gave up (its deadline): none left in flight
        for task in tasks:
            task.cancel()
        raise
    if failures:
        raise PublishError(repr(failures[0])) from failures[0]
    return confirmed


def confirm_lost(exc: BaseException) -> bool:
    """A CancelledError that is not this task's own cancellation: the client library cancelled
    the confirm it was waiting for, because its connection to the node closed (aiormq does, when
    a partition's heartbeat timeout ends the connection). A failed publish, not a shutdown."""
    task = asyncio.current_task()
    return isinstance(exc, asyncio.CancelledError) and not (task and task.cancelling())


async def retried(
    attempt: Callable[[], Awaitable[None]],
    retry_for_s: float,
    *,
    retry_on: tuple[type[Exception], ...] = (Exception,),
    first_pause_s: float = 0.2,
    max_pause_s: float = 2.0,
) -> None:
    """`attempt` again, with backoff, until it succeeds or `retry_for_s` have passed since
    its first failure (an attempt may itself take its confirm timeout to fail). Only the
    errors in `retry_on` are retried (and a confirm lost to a closed connection); any other
    goes up at once."""
    deadline: float | None = None
    pause = first_pause_s
    while True:
        try:
            return await attempt()
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                if not confirm_lost(exc):
                    raise
            elif not isinstance(exc, retry_on):
                raise
            now = time.monotonic()
            deadline = deadline or now + retry_for_s
            if now + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, max_pause_s)


def public_urls(nodes: Iterable[str]) -> list[str]:
    """The broker's node URLs without credentials: one AsyncAPI server each."""
    urls = []
    for node in nodes:
        url = urlsplit(node)
        urls.append(url._replace(netloc=url.netloc.rpartition("@")[2]).geturl())
    return urls


def _about(channel: Channel) -> str:
    """What a channel carries and how, in the words of the AsyncAPI document."""
    if channel.delivery is Delivery.WORK:
        how = "a work channel: each message goes to exactly one consumer instance"
    else:
        how = "a broadcast channel: every running consumer instance gets every message"
    return f"{channel.payload.__name__} on {how}."
