"""The raw chain's first hop: a FastAPI app whose POST /api/roundtrip publishes the key/value
and answers 202 once the broker confirmed it (as msarch's roundtrip service does).

    python -m bench.baselines.chain_app rabbit|nats NAMESPACE PORT

RabbitMQ: a persistent message to the chain's quorum queue through the default exchange,
mandatory, on a channel with publisher confirms. NATS: js.publish to the chain's work stream
with a Nats-Msg-Id, its PubAck awaited.
"""

import argparse
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from uuid import uuid4

import aio_pika
import nats
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from bench.baselines.chain_layout import ChainLayout
from bench.baselines.processes import run_child, serve_app
from bench.baselines.topology import Names
from msarch.testing.isolation import NATS_URL, RABBIT_URL

Publish = Callable[[str, bytes], Awaitable[None]]
"""Publishes (message id, body) and returns once the broker confirmed it."""


class RoundtripBody(BaseModel):
    key: str = Field(min_length=1, max_length=512)
    value: str = Field(max_length=64 * 1024)


class Accepted(BaseModel):
    id: str
    key: str
    value: str


@asynccontextmanager
async def rabbit_publisher(layout: ChainLayout) -> AsyncIterator[Publish]:
    connection = await aio_pika.connect(RABBIT_URL, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = channel.default_exchange

        async def publish(message_id: str, body: bytes) -> None:
            message = aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
            )
            await exchange.publish(message, routing_key=layout.event, mandatory=True)

        yield publish


@asynccontextmanager
async def nats_publisher(layout: ChainLayout) -> AsyncIterator[Publish]:
    client = await nats.connect(NATS_URL, connect_timeout=10)
    try:
        js = client.jetstream()

        async def publish(message_id: str, body: bytes) -> None:
            headers = {"Nats-Msg-Id": message_id}
            await js.publish(layout.event, body, stream=layout.work_stream, headers=headers)

        yield publish
    finally:
        await client.close()


def create_app(publisher: AbstractAsyncContextManager[Publish]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with publisher as publish:
            app.state.publish = publish
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/api/roundtrip", status_code=202)
    async def roundtrip(body: RoundtripBody, request: Request) -> Accepted:
        event_id = str(uuid4())
        event = {
            "id": event_id,
            "key": body.key,
            "value": body.value,
            "accepted_at": datetime.now(UTC).isoformat(),
        }
        await request.app.state.publish(event_id, json.dumps(event).encode())
        return Accepted(id=event_id, key=body.key, value=body.value)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.chain_app")
    parser.add_argument("backend", choices=["rabbit", "nats"])
    parser.add_argument("namespace")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    layout = ChainLayout(Names(args.namespace))
    publisher = rabbit_publisher if args.backend == "rabbit" else nats_publisher
    run_child(serve_app(create_app(publisher(layout)), args.port))


if __name__ == "__main__":
    main()
