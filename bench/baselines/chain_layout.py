"""The raw roundtrip chain's broker objects, on either backend, by the names its processes
share: app -> `event` -> worker -> `forward` -> websocket server.

RabbitMQ: `event` is a quorum queue, `forward` a fanout exchange (each websocket server binds
an exclusive queue of its own to it, as msarch's websocket service does). NATS: `event` is the
subject of a file-backed work stream read by the worker's durable pull consumer, `forward` the
subject of a file-backed broadcast stream read by the websocket server's durable consumer.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bench.baselines.topology import (
    Names,
    broadcast_consumer,
    broadcast_stream,
    nats_objects,
    rabbit_objects,
    work_consumer,
    work_stream,
)


@dataclass(frozen=True)
class ChainLayout:
    names: Names

    @property
    def event(self) -> str:
        """The app publishes here: the quorum queue, or the work stream's subject."""
        return self.names.of("event")

    @property
    def forward(self) -> str:
        """The worker publishes here: the fanout exchange, or the broadcast stream's subject."""
        return self.names.of("forward")

    @property
    def websocket_queue(self) -> str:
        """RabbitMQ: the websocket server's own queue bound to `forward`."""
        return self.names.of("forward.websocket")

    @property
    def work_stream(self) -> str:
        return self.names.stream("work")

    @property
    def broadcast_stream(self) -> str:
        return self.names.stream("broadcast")

    @property
    def worker_consumer(self) -> str:
        return self.names.stream("worker")

    @property
    def websocket_consumer(self) -> str:
        return self.names.stream("websocket")


@asynccontextmanager
async def chain_objects(
    backend: str, layout: ChainLayout, prefetch: int, delivery_limit: int
) -> AsyncIterator[None]:
    """The chain's queues, exchanges, streams and consumers while inside; deleted after."""
    if backend == "rabbit":
        async with rabbit_objects([layout.event], fanouts=[layout.forward]):
            yield
        return
    streams = [
        work_stream(layout.work_stream, layout.event),
        broadcast_stream(layout.broadcast_stream, layout.forward),
    ]
    consumers = [
        (layout.work_stream, work_consumer(layout.worker_consumer, prefetch, delivery_limit)),
        (layout.broadcast_stream, broadcast_consumer(layout.websocket_consumer)),
    ]
    async with nats_objects(streams, consumers):
        yield
