"""Publisher confirms: one confirm awaited at a time (baseline) vs bus.publish_stream.

Both publish the same kind and number of BatchItems on the `batch` work channel
of a private namespace with no consumer, so only the publish path is measured.
"""

import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

from bench.report import print_table
from bench.session import bench_settings
from msarch import channels
from msarch.bus import create_bus
from msarch.messages import BatchItem, item_of
from msarch.testing.isolation import namespace_cleanup


def _items(count: int) -> Iterator[tuple[str, BatchItem]]:
    batch_id: UUID = uuid4()
    for index in range(count):
        yield f"{batch_id}:{index}", item_of(batch_id, index, count)


async def bench_publish(backend: str, count: int) -> dict[str, Any]:
    settings = bench_settings(backend)
    bus = create_bus(settings, service="bench")
    async with namespace_cleanup(settings.namespace):
        try:
            await bus.connect()
            await bus.publish_stream(channels.BATCH, _items(50))  # warm-up: channel, streams

            started, cpu = time.perf_counter(), time.process_time()
            for message_id, item in _items(count):
                await bus.publish(channels.BATCH, item, message_id=message_id)
            one_by_one_s = time.perf_counter() - started
            one_by_one_cpu_us = (time.process_time() - cpu) * 1e6 / count

            started, cpu = time.perf_counter(), time.process_time()
            confirmed = await bus.publish_stream(channels.BATCH, _items(count))
            pipelined_s = time.perf_counter() - started
            pipelined_cpu_us = (time.process_time() - cpu) * 1e6 / count
        finally:
            await bus.stop()
    assert confirmed == count, f"publish_stream confirmed {confirmed} of {count}"
    one_by_one = count / one_by_one_s
    pipelined = count / pipelined_s
    print_table(
        f"publisher confirms ({backend}, {count:,} BatchItems each)",
        ["mode", "seconds", "msgs/s", "ratio", "publisher CPU us/msg"],
        [
            ["baseline: bus.publish, each confirm awaited", one_by_one_s, one_by_one, "1.00x",
             one_by_one_cpu_us],
            [f"bus.publish_stream, window {settings.publish_window}", pipelined_s, pipelined,
             f"{pipelined / one_by_one:.1f}x", pipelined_cpu_us],
        ],
        note="when the publisher's CPU per message times msgs/s nears one core, "
        "it is the publisher, not the confirms, that limits the rate",
    )  # fmt: skip
    return {
        "messages": count,
        "window": settings.publish_window,
        "baseline_msgs_per_s": round(one_by_one, 1),
        "pipelined_msgs_per_s": round(pipelined, 1),
        "ratio": round(pipelined / one_by_one, 2),
        "baseline_cpu_us_per_msg": round(one_by_one_cpu_us, 1),
        "pipelined_cpu_us_per_msg": round(pipelined_cpu_us, 1),
    }
