"""Raw nats-py JetStream end to end, in one process (run by bench.baselines.batch):

    python -m bench.baselines.nats_batch STREAM SUBJECT CONSUMER COUNT --window 512 --prefetch 256

Publishes COUNT messages to SUBJECT of the file-backed work stream STREAM, each with a
Nats-Msg-Id and its PubAck awaited, pipelined; meanwhile pulls them through the durable
consumer CONSUMER in fetches of `prefetch`, decoding and acking each. Says {"ready": true},
then its timestamps (CLOCK_MONOTONIC) and CPU seconds.
"""

import argparse
import asyncio
import json
import time
from uuid import uuid4

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import PubAck
from nats.js.client import JetStreamContext

from bench.baselines.items import item_body, publish_pipelined
from bench.baselines.processes import clock, run_child, say, say_ready
from msarch.testing.isolation import NATS_URL

FETCH_TIMEOUT_S = 5.0


async def consume(
    subscription: JetStreamContext.PullSubscription,
    count: int,
    batch: int,
    publishing: "asyncio.Task[None]",
) -> int:
    """Fetch, decode and ack until `count` are acked; a failed publishing is raised."""
    acked = 0
    while acked < count:
        try:
            fetched = await subscription.fetch(min(batch, count - acked), timeout=FETCH_TIMEOUT_S)
        except NatsTimeout:
            if publishing.done():
                publishing.result()
            continue
        for message in fetched:
            json.loads(message.data)
            await message.ack()
        acked += len(fetched)
    return acked


async def end_to_end(
    stream: str, subject: str, consumer: str, count: int, window: int, prefetch: int
) -> None:
    client = await nats.connect(NATS_URL, connect_timeout=10)
    try:
        js = client.jetstream()
        subscription = await js.pull_subscribe_bind(consumer, stream)
        batch_id = uuid4()

        async def send(index: int) -> PubAck:
            body = item_body(batch_id, index, count)
            headers = {"Nats-Msg-Id": f"{batch_id}:{index}"}
            return await js.publish(subject, body, stream=stream, headers=headers)

        say_ready()
        cpu, first = time.process_time(), clock()
        publishing = asyncio.create_task(publish_pipelined(send, count, window))
        acked = await consume(subscription, count, prefetch, publishing)
        last_ack = clock()
        await publishing
        say(first_publish=first, last_ack=last_ack, acked=acked, cpu_s=time.process_time() - cpu)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.nats_batch")
    parser.add_argument("stream")
    parser.add_argument("subject")
    parser.add_argument("consumer")
    parser.add_argument("count", type=int)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--prefetch", type=int, default=256)
    args = parser.parse_args()
    run_child(
        end_to_end(args.stream, args.subject, args.consumer, args.count, args.window, args.prefetch)
    )


if __name__ == "__main__":
    main()
