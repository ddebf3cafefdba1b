"""RabbitMQ: quorum queues for work, fanout exchanges for broadcasts.

- work channels are durable quorum queues with a delivery limit and
  at-least-once dead-lettering into `<channel>.dead` (the broker's own safety
  net; the consume middleware dead-letters first, with the reason), set as a
  policy when the management API is configured; on a cluster they are
  replicated on every node listed (MSARCH_QUORUM_SIZE), and the connection moves
  to another node when its node goes away (rabbit_cluster.py);
- broadcast channels are fanout exchanges; each running instance binds its own
  queue, which goes away with the instance (replicated on a cluster, see
  _instance_queue);
- messages are persistent, every publish waits for the publisher confirm, and
  an unroutable work message raises instead of vanishing.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, cast
from uuid import uuid4

import aiormq
from aio_pika import DeliveryMode, Message, connect_robust
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from faststream.message import StreamMessage
from faststream.rabbit import Channel as AmqpChannel
from faststream.rabbit import (
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from faststream.rabbit.schemas.queue import ClassicQueueArgs, QuorumQueueArgs
from yarl import URL

from msarch import channels, tracing
from msarch.bus.base import (
    DEAD_SUFFIX,
    REASON_HEADER,
    Bus,
    DeadLetter,
    ObjectKind,
    dead_letter_headers,
    public_urls,
    read_dead_letter,
)
from msarch.bus.rabbit_acks import GroupAcks
from msarch.bus.rabbit_cluster import apply_policy, node_connection, work_policy
from msarch.channels import Channel, Delivery
from msarch.settings import Settings

INSTANCE_QUEUE_EXPIRES_S = 60.0
"""On a cluster: how long an instance's broadcast queue outlives the instance."""

# aiormq leaves a server that has sent nothing for (heartbeat + 1) x 3 s: 21 s with the cluster
# stack's 6 s heartbeat, longer than a 20 s partition, in which a cut-off node closes nothing and
# every service connected to it waited it out. RabbitMQ gives a silent client two missed
# heartbeats (heartbeat / 2 apart); the services give their node as long (heartbeat + 1 s), as
# MSARCH_BROKER_HEARTBEAT_S promises. Every aiormq connection of the process is msarch's.
aiormq.Connection.HEARTBEAT_GRACE_MULTIPLIER = 1


def with_heartbeat(url: str, seconds: float) -> str:
    """`url` with aio-pika's heartbeat (seconds) unless it names one itself."""
    parsed = URL(url)
    if "heartbeat" in parsed.query:
        return url
    return str(parsed.update_query(heartbeat=max(1, round(seconds))))


class RabbitBus(Bus[RabbitBroker]):
    system = "rabbitmq"

    def __init__(self, settings: Settings, *, service: str) -> None:
        super().__init__(settings, service=service)
        nodes = [with_heartbeat(url, settings.broker_heartbeat_s) for url in settings.broker_urls]
        self.clustered = len(nodes) > 1
        self.broker = RabbitBroker(
            nodes[0],
            fail_fast=True,
            reconnect_interval=1.0,
            default_channel=AmqpChannel(
                prefetch_count=settings.prefetch,
                publisher_confirms=True,
                on_return_raises=True,
            ),
            app_id=service,
            specification_url=",".join(public_urls(nodes)),
            **self._broker_options(),
        )
        self._nodes = nodes
        if self.clustered:
            # FastStream hands its connection options to aio-pika's connect_robust as they are.
            self.broker._connection_kwargs["connection_class"] = node_connection(nodes)
        self.dead_exchange = RabbitExchange(
            f"{self.prefix}msarch.dead", type=ExchangeType.DIRECT, durable=True
        )
        self._stream_connection: AbstractRobustConnection | None = None
        self._stream_channel: AbstractRobustChannel | None = None
        self._stream_opening = asyncio.Lock()
        """Concurrent first streams (two batches at once) open one connection, not one each."""
        self._group_acks = GroupAcks()
        self._own_channels: dict[str, AmqpChannel] = {}
        """The queues consumed on a channel of their own, and that channel."""

    # -- names -----------------------------------------------------------------

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
        arguments: dict[str, Any] = {}
        if self.settings.rabbit_management_url is None:  # no policy: fixed at declaration
            arguments.update(self._work_policy(), **{"x-dead-letter-routing-key": name})
        if size := self._quorum_size():
            arguments["x-quorum-initial-group-size"] = size
        return RabbitQueue(
            name,
            queue_type=QueueType.QUORUM,
            durable=True,
            arguments=cast("QuorumQueueArgs", arguments),
        )

    def _work_policy(self) -> dict[str, Any]:
        """Delivery limit and at-least-once dead-lettering of the work queues, as queue
        arguments (x-...) or, without the prefix, as a policy's definition."""
        return {
            "x-delivery-limit": self.settings.delivery_limit,
            # Dead letters keep their routing key, the queue's name: `<channel>.dead` binds it.
            "x-dead-letter-exchange": self.dead_exchange.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def _quorum_size(self) -> int | None:
        """Replicas of each work queue: as configured, else every node listed, else the
        broker's own default."""
        nodes = len(self.settings.broker_urls) if self.clustered else None
        return self.settings.quorum_size or nodes

    def _broadcast_exchange(self, channel: Channel) -> RabbitExchange:
        return RabbitExchange(self.name(channel), type=ExchangeType.FANOUT, durable=True)

    def _instance_queue(self, channel: Channel) -> RabbitQueue:
        """One queue per running instance; it goes away with the instance.

        On one node it is exclusive to the connection. On a cluster a connection moves
        between nodes and an exclusive queue would go with the node it lived on, and with it
        every message broadcast until the instance declared it again elsewhere: there it is
        a quorum queue, replicated like the work queues, that expires once its instance has
        been gone for INSTANCE_QUEUE_EXPIRES_S.
        """
        name = f"{self.name(channel)}.{self.instance}"
        dead_letters: dict[str, Any] = {
            "x-dead-letter-exchange": self.dead_exchange.name,
            "x-dead-letter-routing-key": self.name(channel),
        }
        if not self.clustered:
            return RabbitQueue(
                name,
                durable=False,
                exclusive=True,
                auto_delete=True,
                arguments=cast("ClassicQueueArgs", dead_letters),
            )
        arguments = {**dead_letters, "x-expires": int(INSTANCE_QUEUE_EXPIRES_S * 1000)}
        if size := self._quorum_size():
            arguments["x-quorum-initial-group-size"] = size
        return RabbitQueue(
            name,
            queue_type=QueueType.QUORUM,
            durable=True,
            arguments=cast("QuorumQueueArgs", arguments),
        )

    # -- consuming ---------------------------------------------------------------

    def _subscription(self, channel: Channel) -> dict[str, Any]:
        if channel.delivery is Delivery.WORK:
            return {"queue": self._work_queue(channel)}
        return {
            "queue": self._instance_queue(channel),
            "exchange": self._broadcast_exchange(channel),
        }

    def _batch_subscription(self, channel: Channel) -> dict[str, Any]:
        """A channel of its own, so that a multiple ack there settles this consumer's
        deliveries and no other's (msarch.bus.rabbit_acks)."""
        own = self._own_channels[self.name(channel)] = AmqpChannel(
            prefetch_count=self.settings.prefetch
        )
        self._group_acks.queues.add(self.name(channel))
        return {"channel": own}

    async def _settle_done(self, messages: list[StreamMessage[Any]]) -> None:
        await self._group_acks.ack([message.raw_message for message in messages])

    @contextlib.contextmanager
    def handling(self, msg: StreamMessage[Any]) -> Iterator[None]:
        """A delivery of a queue acked in groups joins its channel's window first."""
        if self._group_acks.queues and self.channel_of(msg) in self._group_acks.queues:
            self._group_acks.arrived(msg.raw_message)
        yield

    # -- publishing --------------------------------------------------------------

    def _publication(
        self, channel: Channel, message_id: str | None, headers: dict[str, Any] | None
    ) -> dict[str, Any]:
        return {
            **self._destination(channel),
            "persist": True,
            "message_id": message_id,
            "headers": headers,
        }

    def _publisher_destination(self, channel: Channel) -> dict[str, Any]:
        return {**self._destination(channel), "persist": True}

    def _destination(self, channel: Channel) -> dict[str, Any]:
        if channel.delivery is Delivery.WORK:
            return {"queue": self.name(channel), "mandatory": True}
        # A broadcast with no listener is not an error: nobody is connected.
        return {"exchange": self._broadcast_exchange(channel), "mandatory": False}

    async def _confirmed_sender(
        self, channel: Channel, correlation_id: str | None, headers: dict[str, str]
    ) -> Callable[[str, bytes], Awaitable[None]]:
        exchange = await self._default_exchange()
        routing_key = self.name(channel)
        amqp_headers: dict[str, Any] | None = dict(headers) or None  # one table for every item

        async def send(message_id: str, body: bytes) -> None:
            await exchange.publish(
                Message(
                    body,
                    content_type="application/json",
                    delivery_mode=DeliveryMode.PERSISTENT,
                    message_id=message_id,
                    correlation_id=correlation_id,
                    app_id=self.service,
                    headers=amqp_headers,
                ),
                routing_key=routing_key,
                mandatory=True,
                timeout=self.settings.upstream_timeout_s,
            )

        return send

    async def publish_raw(
        self,
        channel: Channel,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        amqp_headers: dict[str, Any] = tracing.with_current_trace(headers)
        await self.broker.publish(
            body,
            persist=True,
            message_id=message_id or uuid4().hex,
            headers=amqp_headers,
            timeout=self.settings.upstream_timeout_s,
            **self._destination(channel),
        )

    async def _default_exchange(self) -> AbstractExchange:
        channel: AbstractRobustChannel = await self._publish_channel()
        return channel.default_exchange

    async def _publish_channel(self) -> AbstractRobustChannel:
        """A channel of our own for publish_stream, on a connection of its own.

        FastStream awaits each confirm in turn; publish_stream keeps many outstanding. A
        connection that publishes that fast can be held back by the broker's flow control
        (RabbitMQ stops reading its socket), and everything else on that connection would
        wait with it: the service's consumers and, after a node loss, their restore. So the
        stream has its own connection, as RabbitMQ advises for heavy publishers (it did not
        end the leader-kill stalls on its own: docs/reliability.md, Open).
        """
        async with self._stream_opening:
            if self._stream_channel is None:
                self._require_connected()
                self._stream_connection = await connect_robust(
                    self._nodes[0],
                    connection_class=node_connection(self._nodes),
                    client_properties={"connection_name": f"{self.instance} publish_stream"},
                )
                self._stream_channel = await self._stream_connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
            return self._stream_channel

    async def stop(self) -> None:
        await super().stop()
        connection = self._stream_connection
        self._stream_connection = self._stream_channel = None
        if connection is not None:
            await connection.close()

    # -- dead letters ------------------------------------------------------------

    async def dead_letter(
        self,
        channel_name: str,
        body: bytes,
        headers: dict[str, Any],
        reason: str,
        message_id: str | None = None,
        deliveries: int = 1,
    ) -> None:
        dead: dict[str, Any] = dead_letter_headers(
            headers,
            reason=reason,
            channel=channel_name,
            message_id=message_id,
            deliveries=deliveries,
        )
        await self.broker.publish(
            body,
            exchange=self.dead_exchange,
            routing_key=channel_name,
            persist=True,
            mandatory=True,
            message_id=uuid4().hex,  # the dead letter's own: its handle for requeue and drop
            headers=dead,
            timeout=self.settings.upstream_timeout_s,
        )

    async def iter_dead_letters(self, channel: Channel) -> AsyncIterator[tuple[bytes, str]]:
        queue = await self.broker.declare_queue(self.dead_letter_queue(channel))
        while (message := await queue.get(fail=False, timeout=5)) is not None:
            headers = message.headers or {}
            reason = str(headers.get(REASON_HEADER) or _death_reason(headers))
            await message.ack()
            yield message.body, reason

    async def dead_letters(self, channel: Channel, limit: int = 100) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        async with self._dead_letter_queue(channel) as queue:
            while len(found) < limit and (message := await queue.get(fail=False)):
                found.append(_dead_letter_of(message, channel))
        return found  # the channel closed: every message got is back in the queue

    async def dead_letter_count(self, channel: Channel) -> int:
        async with self._dead_letter_queue(channel) as queue:
            return int(queue.declaration_result.message_count or 0)

    async def requeue_dead(self, channel: Channel, ids: Collection[str] | None) -> list[str]:
        async def send_back(letter: DeadLetter) -> None:
            await self.publish_raw(
                channel, letter.body, message_id=letter.message_id, headers=letter.headers
            )

        return await self._take_dead(channel, ids, send_back)

    async def drop_dead(self, channel: Channel, ids: Collection[str]) -> list[str]:
        async def nothing(letter: DeadLetter) -> None:
            return None

        return await self._take_dead(channel, ids, nothing)

    async def _take_dead(
        self,
        channel: Channel,
        ids: Collection[str] | None,
        then: Callable[[DeadLetter], Awaitable[None]],
    ) -> list[str]:
        """Get every dead letter in turn; for those chosen, `then`, then ack (removed). The
        others go back to the queue when the channel closes."""
        taken: list[str] = []
        async with self._dead_letter_queue(channel) as queue:
            while message := await queue.get(fail=False):
                letter = _dead_letter_of(message, channel)
                if ids is None or letter.id in ids:
                    await then(letter)
                    await message.ack()
                    taken.append(letter.id)
        return taken

    def _dead_letter_queue(self, channel: Channel) -> AbstractAsyncContextManager[AbstractQueue]:
        """`<channel>.dead` on a channel of its own: closing it puts back what was not acked."""
        return self._existing_queue(self.dead_letter_queue(channel).name)

    @contextlib.asynccontextmanager
    async def _existing_queue(self, name: str) -> AsyncIterator[AbstractQueue]:
        """A queue that exists, looked up (passively declared) on an AMQP channel of its own."""
        self._require_connected()
        connection = await self.broker.connect()
        amqp_channel = await connection.channel()
        try:
            yield await amqp_channel.declare_queue(name, passive=True)
        finally:
            await amqp_channel.close()

    # -- lag ---------------------------------------------------------------------

    async def consumer_lag(self, channel: Channel) -> int:
        # The messages ready in the queue this service consumes (the work queue, or its own).
        async with self._existing_queue(self._subscription(channel)["queue"].name) as queue:
            return int(queue.declaration_result.message_count or 0)

    # -- declaring and dropping --------------------------------------------------

    async def _declare(self) -> None:
        if management := self.settings.rabbit_management_url:
            work = [self.name(c) for c in channels.ALL if c.delivery is Delivery.WORK]
            definition = {k.removeprefix("x-"): v for k, v in self._work_policy().items()}
            vhost = URL(self.settings.broker_urls[0]).path.removeprefix("/") or "/"
            await apply_policy(
                management, vhost, f"{self.prefix}msarch-work", work_policy(work, definition)
            )
        dead = await self.broker.declare_exchange(self.dead_exchange)
        for channel in channels.ALL:
            queue = await self.broker.declare_queue(self.dead_letter_queue(channel))
            await queue.bind(dead, routing_key=self.name(channel))
            if channel.delivery is Delivery.WORK:
                # FastStream's declarer keeps a queue's first declaration, and a consumer of
                # it takes that declaration's channel: a queue consumed on a channel of its own
                # is declared on that channel.
                own = self._own_channels.get(self.name(channel))
                await self.broker.config.declarer.declare_queue(
                    self._work_queue(channel), channel=own
                )
            else:
                await self.broker.declare_exchange(self._broadcast_exchange(channel))

    def broker_objects(self) -> dict[ObjectKind, list[str]]:
        work = [c for c in channels.ALL if c.delivery is Delivery.WORK]
        broadcast = [c for c in channels.ALL if c.delivery is Delivery.BROADCAST]
        return {
            "queue": [self._work_queue(c).name for c in work]
            + [self.dead_letter_queue(c).name for c in channels.ALL],
            "exchange": [self._broadcast_exchange(c).name for c in broadcast]
            + [self.dead_exchange.name],
        }

    async def _drop(self) -> None:
        connection = await self.broker.connect()
        objects = self.broker_objects()
        for kind in ("queue", "exchange"):
            for name in objects[kind]:
                # A failed delete (say, not found) closes its AMQP channel: one channel each.
                with contextlib.suppress(Exception):
                    async with connection.channel() as amqp:
                        if kind == "queue":
                            await amqp.queue_delete(name)
                        else:
                            await amqp.exchange_delete(name)

    # -- messages ----------------------------------------------------------------

    def deliveries(self, msg: StreamMessage[Any]) -> int:
        # Quorum queues count deliveries in this header (absent on the first one).
        return int((msg.headers or {}).get("x-delivery-count", 0)) + 1

    def channel_of(self, msg: StreamMessage[Any]) -> str:
        raw = msg.raw_message
        return str(raw.exchange or raw.routing_key or "")


def _dead_letter_of(message: AbstractIncomingMessage, channel: Channel) -> DeadLetter:
    headers = {k: v for k, v in (message.headers or {}).items() if isinstance(v, str | int | float)}
    return read_dead_letter(
        message.message_id or "",
        channel,
        message.body,
        headers,
        broker_reason=_death_reason(message.headers or {}),
        broker_message_id=message.message_id,
        broker_deliveries=headers.get("x-delivery-count"),
    )


def _death_reason(headers: dict[str, Any]) -> str:
    reason = headers.get("x-first-death-reason")
    return f"broker: {reason}" if reason else "unknown"
