"""The raw batch baselines: N messages end to end with the client library alone, at msarch's
durability, publish window and prefetch, on the machine's shared broker.

- rabbit, raw aio-pika: a publisher process and a consumer process (rabbit_batch.py), a quorum
  queue of the run's own, persistent messages, confirms pipelined, one ack per message;
- nats, raw nats-py: pipelined publish and pull consume in one process (nats_batch.py), a
  file-backed work stream of the run's own, one ack per message.

items/s = N / (the last ack - the first publish), both taken on CLOCK_MONOTONIC.
"""

from dataclasses import dataclass
from typing import Any

from bench.baselines.processes import Child, running
from bench.baselines.topology import (
    Names,
    nats_objects,
    rabbit_objects,
    work_consumer,
    work_stream,
)
from msarch.settings import Settings

LIBRARIES = {"rabbit": "raw aio-pika", "nats": "raw nats-py"}
"""What each backend's batch baseline is called in tables and lines."""
SECONDS_PER_ITEM_LIMIT = 0.01
"""A run slower than 100 items/s is taken for stuck (at least MIN_TIMEOUT_S)."""
MIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RawBatchRun:
    size: int
    seconds: float
    items_per_s: float
    cpu_us_per_item: dict[str, float]
    """CPU microseconds per item of each baseline process (publisher, consumer; or both in one)."""


async def raw_batch(backend: str, size: int, settings: Settings) -> RawBatchRun:
    """One run of `backend`'s batch baseline with `size` messages and msarch's window and
    prefetch (from `settings`)."""
    if backend == "rabbit":
        return await _rabbit(size, settings)
    if backend == "nats":
        return await _nats(size, settings)
    raise ValueError(f"no batch baseline for {backend!r}")


def _timeout_s(size: int) -> float:
    return max(MIN_TIMEOUT_S, size * SECONDS_PER_ITEM_LIMIT)


async def _rabbit(size: int, settings: Settings) -> RawBatchRun:
    queue = Names.new().of("batch")
    module, count = "bench.baselines.rabbit_batch", str(size)
    consumer = Child(module, ["consume", queue, count, "--prefetch", str(settings.prefetch)])
    publisher = Child(module, ["publish", queue, count, "--window", str(settings.publish_window)])
    async with rabbit_objects([queue]), running(consumer, publisher):
        published = await publisher.message(_timeout_s(size))
        consumed = await consumer.message(_timeout_s(size))
    _check_acked(consumed, size)
    cpu_s = {"publisher": published["cpu_s"], "consumer": consumed["cpu_s"]}
    return _run(size, consumed["last_ack"] - published["first_publish"], cpu_s)


async def _nats(size: int, settings: Settings) -> RawBatchRun:
    names = Names.new()
    stream, subject, consumer = names.stream("batch"), names.of("batch"), names.stream("consumer")
    config = work_consumer(consumer, settings.prefetch, settings.delivery_limit)
    child = Child(
        "bench.baselines.nats_batch",
        [stream, subject, consumer, str(size),
         "--window", str(settings.publish_window), "--prefetch", str(settings.prefetch)],
    )  # fmt: skip
    async with nats_objects([work_stream(stream, subject)], [(stream, config)]), running(child):
        figures = await child.message(_timeout_s(size))
    _check_acked(figures, size)
    return _run(size, figures["last_ack"] - figures["first_publish"], {"both": figures["cpu_s"]})


def _check_acked(figures: dict[str, Any], size: int) -> None:
    if figures["acked"] != size:
        raise RuntimeError(f"the batch baseline acked {figures['acked']} of {size} messages")


def _run(size: int, seconds: float, cpu_s: dict[str, float]) -> RawBatchRun:
    return RawBatchRun(
        size=size,
        seconds=round(seconds, 3),
        items_per_s=round(size / seconds, 1),
        cpu_us_per_item={name: round(s * 1e6 / size, 1) for name, s in cpu_s.items()},
    )
