"""Raw aio-pika end to end, one process per side (run by bench.baselines.batch):

    python -m bench.baselines.rabbit_batch publish QUEUE COUNT --window 512
    python -m bench.baselines.rabbit_batch consume QUEUE COUNT --prefetch 256

`publish` sends COUNT persistent messages to the quorum queue QUEUE through the default
exchange (mandatory), publisher confirms pipelined; `consume` takes them with a prefetch of
msarch's, decodes each and acks it (one basic.ack each, after the handling). Each says
{"ready": true}, then its timestamps (CLOCK_MONOTONIC) and CPU seconds.
"""

import argparse
import json
import time
from uuid import uuid4

import aio_pika

from bench.baselines.items import item_body, publish_pipelined
from bench.baselines.processes import clock, run_child, say, say_ready
from msarch.testing.isolation import RABBIT_URL


async def publish(queue: str, count: int, window: int) -> None:
    connection = await aio_pika.connect(RABBIT_URL, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = channel.default_exchange
        batch_id = uuid4()

        async def send(index: int) -> object:
            message = aio_pika.Message(
                item_body(batch_id, index, count),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=f"{batch_id}:{index}",
            )
            return await exchange.publish(message, routing_key=queue, mandatory=True)

        say_ready()
        cpu, first = time.process_time(), clock()
        await publish_pipelined(send, count, window)
        say(first_publish=first, last_confirm=clock(), cpu_s=time.process_time() - cpu)


async def consume(queue: str, count: int, prefetch: int) -> None:
    connection = await aio_pika.connect(RABBIT_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        source = await channel.get_queue(queue)  # declared by the bench
        acked = 0
        say_ready()
        cpu = time.process_time()
        async with source.iterator() as messages:
            async for message in messages:
                json.loads(message.body)
                await message.ack()
                acked += 1
                if acked == count:
                    break
        say(last_ack=clock(), acked=acked, cpu_s=time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.rabbit_batch")
    parser.add_argument("side", choices=["publish", "consume"])
    parser.add_argument("queue")
    parser.add_argument("count", type=int)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--prefetch", type=int, default=256)
    args = parser.parse_args()
    if args.side == "publish":
        run_child(publish(args.queue, args.count, args.window))
    else:
        run_child(consume(args.queue, args.count, args.prefetch))


if __name__ == "__main__":
    main()
