"""The raw chain's worker: for each message of `event`, Redis SET of the key/value, a persistent
publish of it to `forward` (its confirm awaited), then the ack (as msarch's store does, minus
the event log).

    python -m bench.baselines.chain_worker rabbit|nats NAMESPACE REDIS_URL --prefetch 256

Messages are handled concurrently, up to msarch's prefetch: aio-pika runs a consume callback
as a task per delivery, and each NATS fetch is handled as one gather (as FastStream's pull
subscriber handles what it fetched).
"""

import argparse
import asyncio
import json

import aio_pika
import nats
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout

from bench.baselines.chain_layout import ChainLayout
from bench.baselines.processes import run_child, say_ready
from bench.baselines.topology import Names
from msarch.testing.isolation import NATS_URL, RABBIT_URL

FETCH_TIMEOUT_S = 5.0


async def store(redis: "aioredis.Redis", layout: ChainLayout, body: bytes) -> str:
    """SET the key/value; the event's id."""
    event = json.loads(body)
    await redis.set(layout.names.kv_key(event["key"]), event["value"])
    return str(event["id"])


async def work_rabbit(layout: ChainLayout, redis: "aioredis.Redis", prefetch: int) -> None:
    connection = await aio_pika.connect(RABBIT_URL, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(layout.event)
        forward = await channel.get_exchange(layout.forward)

        async def handle(message: AbstractIncomingMessage) -> None:
            event_id = await store(redis, layout, message.body)
            copy = aio_pika.Message(
                message.body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=event_id,
            )
            await forward.publish(copy, routing_key="")
            await message.ack()

        await queue.consume(handle)
        say_ready()
        await asyncio.Future()  # until SIGTERM


async def work_nats(layout: ChainLayout, redis: "aioredis.Redis", prefetch: int) -> None:
    client = await nats.connect(NATS_URL, connect_timeout=10)
    try:
        js = client.jetstream()
        subscription = await js.pull_subscribe_bind(layout.worker_consumer, layout.work_stream)

        async def handle(message: Msg) -> None:
            event_id = await store(redis, layout, message.data)
            headers = {"Nats-Msg-Id": event_id}
            await js.publish(
                layout.forward, message.data, stream=layout.broadcast_stream, headers=headers
            )
            await message.ack()

        say_ready()
        while True:
            try:
                fetched = await subscription.fetch(prefetch, timeout=FETCH_TIMEOUT_S)
            except NatsTimeout:
                continue
            await asyncio.gather(*(handle(message) for message in fetched))
    finally:
        await client.close()


async def work(backend: str, layout: ChainLayout, redis_url: str, prefetch: int) -> None:
    # msarch's store pool: blocking, a connection for each message in flight and then some.
    pool = aioredis.BlockingConnectionPool.from_url(
        redis_url, max_connections=prefetch + 64, timeout=30
    )
    redis = aioredis.Redis(connection_pool=pool)
    try:
        await redis.ping()
        if backend == "rabbit":
            await work_rabbit(layout, redis, prefetch)
        else:
            await work_nats(layout, redis, prefetch)
    finally:
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.chain_worker")
    parser.add_argument("backend", choices=["rabbit", "nats"])
    parser.add_argument("namespace")
    parser.add_argument("redis_url")
    parser.add_argument("--prefetch", type=int, default=256)
    args = parser.parse_args()
    layout = ChainLayout(Names(args.namespace))
    run_child(work(args.backend, layout, args.redis_url, args.prefetch))


if __name__ == "__main__":
    main()
