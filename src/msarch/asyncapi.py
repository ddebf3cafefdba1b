"""The AsyncAPI 3.0 document of the whole system, built from `msarch.channels`.

FastStream can describe one broker's subscribers, but our channels span five
services, so the one document is built from the channel table itself: every
channel, its message schema (from the Pydantic model), and which service sends
and which receives it.
"""

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import msarch
from msarch.channels import ALL, Channel, Delivery

ASYNCAPI_VERSION = "3.0.0"
DEFAULT_SERVERS = {"amqp": "127.0.0.1:5672", "nats": "127.0.0.1:4222"}

Document = dict[str, Any]


def asyncapi_document(
    channels: Sequence[Channel] = ALL,
    *,
    namespace: str = "",
    broker_url: str | None = None,
) -> Document:
    """The AsyncAPI document; `broker_url` (credentials dropped) sets that server's host."""
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "msarch",
            "version": msarch.__version__,
            "description": (
                "The messages msarch services exchange on the broker. Work channels are "
                "competing-consumer queues; broadcast channels reach every running instance."
            ),
        },
        "defaultContentType": "application/json",
        "servers": _servers(broker_url),
        "channels": {c.name: _channel(c, namespace) for c in channels},
        "operations": {
            name: operation for c in channels for name, operation in _operations(c).items()
        },
        "components": {
            "messages": {m.__name__: _message(m) for m in _payloads(channels)},
            "schemas": _schemas(_payloads(channels)),
        },
    }


def _servers(broker_url: str | None) -> Document:
    hosts = dict(DEFAULT_SERVERS)
    if broker_url:
        url = urlsplit(broker_url)
        if url.scheme in hosts and url.hostname:
            hosts[url.scheme] = f"{url.hostname}:{url.port}" if url.port else url.hostname
    return {
        "rabbitmq": {
            "host": hosts["amqp"],
            "protocol": "amqp",
            "protocolVersion": "0.9.1",
            "description": "RabbitMQ, the default broker (MSARCH_BROKER_URL=amqp://...).",
        },
        "nats": {
            "host": hosts["nats"],
            "protocol": "nats",
            "description": "NATS JetStream, the second backend (MSARCH_BROKER_URL=nats://...).",
        },
    }


def _channel(channel: Channel, namespace: str) -> Document:
    address = f"{namespace}{channel.name}"
    message = channel.payload.__name__
    if channel.delivery is Delivery.WORK:
        how = "a durable quorum queue: each message goes to exactly one consumer instance"
        amqp: Document = {
            "is": "queue",
            "queue": {"name": address, "durable": True, "exclusive": False, "autoDelete": False},
        }
    else:
        how = "a fanout exchange: every running consumer instance gets every message"
        amqp = {
            "is": "routingKey",
            "exchange": {"name": address, "type": "fanout", "durable": True, "autoDelete": False},
        }
    return {
        "address": address,
        "title": channel.name,
        "description": f"{channel.producer} → {channel.consumer}: {message} on {how}.",
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        "bindings": {"amqp": {**amqp, "bindingVersion": "0.3.0"}},
    }


def _operations(channel: Channel) -> dict[str, Document]:
    message = channel.payload.__name__
    base: Document = {
        "channel": {"$ref": f"#/channels/{channel.name}"},
        "messages": [{"$ref": f"#/channels/{channel.name}/messages/{message}"}],
    }
    return {
        f"{channel.producer}_sends_{channel.name}": {
            **base,
            "action": "send",
            "title": f"{channel.producer} sends {message} on {channel.name}",
            "tags": [{"name": channel.producer}],
        },
        f"{channel.consumer}_receives_{channel.name}": {
            **base,
            "action": "receive",
            "title": f"{channel.consumer} receives {message} from {channel.name}",
            "tags": [{"name": channel.consumer}],
        },
    }


def _payloads(channels: Sequence[Channel]) -> list[type[BaseModel]]:
    return list(dict.fromkeys(c.payload for c in channels))


def _message(model: type[BaseModel]) -> Document:
    return {
        "name": model.__name__,
        "title": model.__name__,
        "summary": (model.__doc__ or model.__name__).strip().splitlines()[0],
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
    }


def _schemas(models: Sequence[type[BaseModel]]) -> Document:
    # What consumers validate against, so the "validation" mode of each model.
    _, top = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    definitions: Document = top.get("$defs", {})
    return definitions
