"""The raw chain's last hop: a FastAPI websocket endpoint (/ws) that consumes `forward` and
sends each message, as a text frame, to every connected client, then acks it (as msarch's
websocket service does).

    python -m bench.baselines.chain_websocket rabbit|nats NAMESPACE PORT --prefetch 256

GET /stats answers {"forwarded": <messages consumed>}, for the bench to see the chain drain.
"""

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import nats
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from nats.errors import TimeoutError as NatsTimeout

from bench.baselines.chain_layout import ChainLayout
from bench.baselines.processes import run_child, serve_app
from bench.baselines.topology import Names
from msarch.testing.isolation import NATS_URL, RABBIT_URL

FETCH_TIMEOUT_S = 5.0


@dataclass
class Hub:
    clients: set[WebSocket] = field(default_factory=set)
    forwarded: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    async def push(self, frame: str) -> None:
        self.forwarded += 1
        for client in list(self.clients):
            try:
                await client.send_text(frame)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.clients.discard(client)


Consume = Callable[[ChainLayout, int, Hub], Coroutine[Any, Any, None]]


async def consume_rabbit(layout: ChainLayout, prefetch: int, hub: Hub) -> None:
    connection = await aio_pika.connect(RABBIT_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        forward = await channel.get_exchange(layout.forward)
        queue = await channel.declare_queue(
            layout.websocket_queue, durable=False, exclusive=True, auto_delete=True
        )
        await queue.bind(forward)
        hub.subscribed.set()
        async with queue.iterator() as messages:
            async for message in messages:
                await hub.push(message.body.decode())
                await message.ack()


async def consume_nats(layout: ChainLayout, prefetch: int, hub: Hub) -> None:
    client = await nats.connect(NATS_URL, connect_timeout=10)
    try:
        js = client.jetstream()
        subscription = await js.pull_subscribe_bind(
            layout.websocket_consumer, layout.broadcast_stream
        )
        hub.subscribed.set()
        while True:
            try:
                fetched = await subscription.fetch(prefetch, timeout=FETCH_TIMEOUT_S)
            except NatsTimeout:
                continue
            for message in fetched:
                await hub.push(message.data.decode())
                await message.ack()
    finally:
        await client.close()


def create_app(consume: Consume, layout: ChainLayout, prefetch: int) -> FastAPI:
    hub = Hub()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        consuming = asyncio.create_task(consume(layout, prefetch, hub))
        subscribed = asyncio.create_task(hub.subscribed.wait())
        await asyncio.wait([consuming, subscribed], return_when=asyncio.FIRST_COMPLETED)
        if consuming.done():
            subscribed.cancel()
            consuming.result()  # why it could not subscribe
        try:
            yield
        finally:
            consuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consuming

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/ws")
    async def frames(socket: WebSocket) -> None:
        await socket.accept()
        hub.clients.add(socket)
        try:
            while True:
                await socket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            hub.clients.discard(socket)

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return {"forwarded": hub.forwarded}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.chain_websocket")
    parser.add_argument("backend", choices=["rabbit", "nats"])
    parser.add_argument("namespace")
    parser.add_argument("port", type=int)
    parser.add_argument("--prefetch", type=int, default=256)
    args = parser.parse_args()
    consume = consume_rabbit if args.backend == "rabbit" else consume_nats
    app = create_app(consume, ChainLayout(Names(args.namespace)), args.prefetch)
    run_child(serve_app(app, args.port))


if __name__ == "__main__":
    main()
