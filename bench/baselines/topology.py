"""What the baselines create on the machine's shared servers, and the deleting of exactly that.

Every queue, exchange, stream and Redis key is named under a namespace of the bench's own
("test-bench-<uuid>-", bench.session), in the test Redis database (db 9, msarch.testing). The
bench process declares the broker objects before it starts a child and deletes each one it
declared on the way out, Ctrl-C and errors included; the children only use them. (The one
exception is a websocket server's RabbitMQ queue: exclusive to its connection, as msarch's
own broadcast queues are, so the broker deletes it when the child goes.)

The durability is msarch's: quorum queues, persistent messages and publisher confirms on
RabbitMQ; file-backed JetStream streams, explicit acks and a Nats-Msg-Id on every publish on
NATS, with msarch's retention, duplicate window and ack wait.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aio_pika
import nats
import redis.asyncio as aioredis
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from bench.session import NAMESPACE_PREFIX
from msarch.bus.nats import ACK_WAIT_S, BROADCAST_MAX_AGE_S, DUPLICATE_WINDOW_S
from msarch.testing.isolation import (
    NATS_URL,
    RABBIT_URL,
    TEST_REDIS_URL,
    delete_keys,
    new_namespace,
)


@dataclass(frozen=True)
class Names:
    """The names of one baseline run's objects, all under its own namespace."""

    namespace: str

    @classmethod
    def new(cls) -> "Names":
        return cls(new_namespace(NAMESPACE_PREFIX))

    def of(self, role: str) -> str:
        """A queue, exchange or subject: "<namespace>raw-<role>"."""
        return f"{self.namespace}raw-{role}"

    def stream(self, role: str) -> str:
        # Stream and consumer names may not contain '.', '*', '>' or whitespace.
        return self.of(role).replace(".", "_")

    def kv_key(self, key: str) -> str:
        return f"{self.namespace}raw:kv:{key}"


# -- RabbitMQ ----------------------------------------------------------------------------------


@asynccontextmanager
async def rabbit_objects(queues: Sequence[str], fanouts: Sequence[str] = ()) -> AsyncIterator[None]:
    """Durable quorum queues and durable fanout exchanges while inside; deleted after."""
    declared: list[tuple[str, str]] = []
    try:
        connection = await aio_pika.connect(RABBIT_URL, timeout=10)
        async with connection:
            channel = await connection.channel()
            for name in queues:
                await channel.declare_queue(
                    name, durable=True, arguments={"x-queue-type": "quorum"}
                )
                declared.append(("queue", name))
            for name in fanouts:
                await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
                declared.append(("exchange", name))
        yield
    finally:
        await asyncio.shield(_delete_rabbit(declared))


async def _delete_rabbit(declared: Sequence[tuple[str, str]]) -> None:
    if not declared:
        return
    connection = await aio_pika.connect(RABBIT_URL, timeout=10)
    async with connection:
        for kind, name in declared:
            # A failed delete closes its AMQP channel: one channel each.
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                async with connection.channel() as channel:
                    if kind == "queue":
                        await channel.queue_delete(name)
                    else:
                        await channel.exchange_delete(name)


# -- NATS --------------------------------------------------------------------------------------


def work_stream(name: str, subject: str) -> StreamConfig:
    """msarch's work stream: file storage, work-queue retention, a duplicate window."""
    return StreamConfig(
        name=name,
        subjects=[subject],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


def broadcast_stream(name: str, subject: str) -> StreamConfig:
    """msarch's broadcast stream: file storage, kept for an hour, a duplicate window."""
    return StreamConfig(
        name=name,
        subjects=[subject],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=BROADCAST_MAX_AGE_S,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


def work_consumer(durable: str, prefetch: int, delivery_limit: int) -> ConsumerConfig:
    """msarch's durable pull consumer of a work channel: explicit acks, bounded redelivery."""
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_S,
        max_deliver=delivery_limit,
        max_ack_pending=prefetch * 4,
    )


def broadcast_consumer(durable: str) -> ConsumerConfig:
    """A websocket server's consumer of the broadcast stream: from now on, explicit acks."""
    return ConsumerConfig(
        durable_name=durable,
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_S,
    )


@asynccontextmanager
async def nats_objects(
    streams: Sequence[StreamConfig], consumers: Sequence[tuple[str, ConsumerConfig]] = ()
) -> AsyncIterator[None]:
    """The streams and their (stream, consumer) pairs while inside; the streams, and with
    them their consumers, deleted after."""
    created: list[str] = []
    try:
        client = await nats.connect(NATS_URL, connect_timeout=10)
        try:
            js = client.jetstream()
            for stream in streams:
                await js.add_stream(stream)
                assert stream.name is not None
                created.append(stream.name)
            for stream_name, consumer in consumers:
                await js.add_consumer(stream_name, consumer)
        finally:
            await client.close()
        yield
    finally:
        await asyncio.shield(_delete_streams(created))


async def _delete_streams(names: Sequence[str]) -> None:
    if not names:
        return
    client = await nats.connect(NATS_URL, connect_timeout=10)
    try:
        js = client.jetstream()
        for name in names:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await client.close()


# -- Redis -------------------------------------------------------------------------------------


@asynccontextmanager
async def redis_keys(names: Names) -> AsyncIterator[str]:
    """The test Redis database's URL; every key under the run's namespace deleted after."""
    try:
        yield TEST_REDIS_URL
    finally:
        await asyncio.shield(_delete_keys(names.namespace))


async def _delete_keys(namespace: str) -> None:
    client = aioredis.Redis.from_url(TEST_REDIS_URL)
    try:
        await delete_keys(client, namespace)
    finally:
        await client.aclose()
