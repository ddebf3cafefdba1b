"""The AsyncAPI document is valid AsyncAPI 3.0 and describes every channel of the code.

The schema is the official one from the npm package @asyncapi/specs 6.11.1
(schemas/3.0.0.json, Apache-2.0), vendored as tests/schemas/asyncapi-3.0.0.json.
"""

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from msarch.asyncapi import asyncapi_document
from msarch.channels import ALL, Channel

SCHEMA = Path(__file__).parents[1] / "schemas" / "asyncapi-3.0.0.json"


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    # The definitions carry their own $id; register each so $refs resolve offline.
    resources = [
        (definition["$id"], Resource.from_contents(definition, default_specification=DRAFT7))
        for definition in schema["definitions"].values()
        if "$id" in definition
    ]
    registry: Registry[Any] = Registry().with_resources(resources)
    return Draft7Validator(schema, registry=registry)


def _resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def test_document_is_valid_asyncapi_3(validator: Draft7Validator) -> None:
    errors = sorted(validator.iter_errors(asyncapi_document()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_document_with_namespace_and_broker_url_is_valid(validator: Draft7Validator) -> None:
    document = asyncapi_document(
        namespace="test-", broker_url="amqp://guest:secret@rabbit.example:5673/"
    )
    validator.validate(document)
    assert document["channels"]["event"]["address"] == "test-event"
    assert document["servers"]["rabbitmq"]["host"] == "rabbit.example:5673"
    assert "secret" not in json.dumps(document)


@pytest.mark.parametrize("channel", ALL, ids=lambda c: c.name)
def test_every_channel_is_described(channel: Channel) -> None:
    document = asyncapi_document()
    message = channel.payload.__name__

    described = document["channels"][channel.name]
    assert described["address"] == channel.name
    assert message in described["messages"]
    payload = _resolve(
        document, _resolve(document, described["messages"][message]["$ref"])["payload"]["$ref"]
    )
    assert set(payload["properties"]) == set(channel.payload.model_fields)

    operations = document["operations"]
    sends = operations[f"{channel.producer}_sends_{channel.name}"]
    receives = operations[f"{channel.consumer}_receives_{channel.name}"]
    assert (sends["action"], receives["action"]) == ("send", "receive")
    for operation in (sends, receives):
        assert operation["channel"] == {"$ref": f"#/channels/{channel.name}"}


def test_nothing_but_the_code_channels() -> None:
    document = asyncapi_document()
    assert set(document["channels"]) == {c.name for c in ALL}
    assert set(document["components"]["messages"]) == {c.payload.__name__ for c in ALL}
    assert len(document["operations"]) == 2 * len(ALL)
