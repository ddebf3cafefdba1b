"""POST /api/roundtrip over ASGI, without the lifespan: input checks, and the publish.

Invalid input is refused before anything is published, so the app as imported
(its bus never connected) answers those requests on its own.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from faststream.rabbit import RabbitBroker, RabbitMessage, TestRabbitBroker

from apps.roundtrip.app import app as roundtrip_app
from apps.roundtrip.routes import router
from msarch import channels
from msarch.limits import DEFAULT_MAX_BODY
from msarch.messages import KeyValue
from msarch.observability import REQUEST_ID_HEADER
from msarch.problems import PROBLEM_JSON
from msarch.service import create_service
from msarch.settings import Settings
from tests.unit.text_samples import UNICODE_SAMPLES

URL = "/api/roundtrip"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=roundtrip_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://roundtrip") as value:
        yield value


def _problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    assert body["title"]
    return body


async def _post_raw(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await client.post(URL, content=body, headers={"content-type": "application/json"})


# -- 422 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"key": "k", "value": "v"', b"", b"\xff\xfe", b"null", b"[]", b'"kv"'],
    ids=["garbage", "truncated", "empty", "utf16-bom", "null", "array", "string"],
)
async def test_a_body_that_is_not_a_json_object_is_422(
    client: httpx.AsyncClient, body: bytes
) -> None:
    problem = _problem(await _post_raw(client, body), 422)
    assert problem["title"] == "Invalid input"
    assert problem["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": "v"}, "key"),
        ({"key": "k"}, "value"),
        ({"key": "", "value": "v"}, "key"),
        ({"key": "k" * 513, "value": "v"}, "key"),
        ({"key": 5, "value": "v"}, "key"),
        ({"key": "k", "value": None}, "value"),
        ({"key": "k", "value": "é" * 40_000}, "value"),
        ({"key": "k", "value": "a" * (64 * 1024 + 1)}, "value"),
        ({"key": "k", "value": "v", "extra": 1}, "extra"),
    ],
    ids=[
        "missing-key",
        "missing-value",
        "empty-key",
        "key-513-chars",
        "key-not-string",
        "value-null",
        "value-over-64KiB-utf8",
        "value-over-64KiB-ascii",
        "unknown-field",
    ],
)
async def test_invalid_fields_are_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    problem = _problem(await client.post(URL, json=body), 422)
    assert ["body", field] in [error["loc"] for error in problem["errors"]]
    assert f"body.{field}" in problem["detail"]


async def test_a_422_does_not_echo_a_large_input(client: httpx.AsyncClient) -> None:
    answer = await client.post(URL, json={"key": "k", "value": "é" * 40_000})
    _problem(answer, 422)
    assert len(answer.content) < 2000
    assert "éééé" not in answer.text


async def test_a_key_of_512_chars_and_a_64_kib_value_are_not_refused_as_input(
    client: httpx.AsyncClient,
) -> None:
    # The app is not started: accepted input gets as far as the publish, which fails: 503.
    answer = await client.post(URL, json={"key": "k" * 512, "value": "é" * (32 * 1024)})
    problem = _problem(answer, 503)
    assert answer.headers["retry-after"] == "2"
    assert "broker" in problem["detail"]


# -- 413 ------------------------------------------------------------------------------


async def test_a_body_over_512_kib_is_413(client: httpx.AsyncClient) -> None:
    body = json.dumps({"key": "k", "value": "a" * DEFAULT_MAX_BODY}).encode()
    problem = _problem(await _post_raw(client, body), 413)
    assert problem["title"] == "Payload Too Large"
    assert str(DEFAULT_MAX_BODY) in problem["detail"]


async def test_a_streamed_body_over_512_kib_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"key": "k", "value": "'
        for _ in range(DEFAULT_MAX_BODY // 65536 + 1):
            yield b"a" * 65536
        yield b'"}'

    # No content-length: the limit is enforced while the body streams in.
    answer = await client.post(URL, content=chunks(), headers={"content-type": "application/json"})
    _problem(answer, 413)


async def test_a_body_just_under_the_limit_is_not_413(client: httpx.AsyncClient) -> None:
    body = b'{"key": "k", "value": "' + b"a" * (DEFAULT_MAX_BODY - 100) + b'"}'
    assert len(body) <= DEFAULT_MAX_BODY
    answer = await _post_raw(client, body)
    _problem(answer, 422)  # too long a value, but the body itself was read


# -- other errors -------------------------------------------------------------------------


async def test_wrong_method_and_unknown_path_are_problems(client: httpx.AsyncClient) -> None:
    assert _problem(await client.get(URL), 405)["title"] == "Method Not Allowed"
    assert _problem(await client.post("/api/nowhere", json={}), 404)["title"] == "Not Found"


async def test_every_answer_carries_the_request_id(client: httpx.AsyncClient) -> None:
    answer = await client.post(URL, json={}, headers={REQUEST_ID_HEADER: "trace-42"})
    assert answer.headers[REQUEST_ID_HEADER] == "trace-42"
    generated = await client.post(URL, json={})
    assert len(generated.headers[REQUEST_ID_HEADER]) == 32


# -- accepted: published on `event` ----------------------------------------------------------


@pytest.fixture
async def published(
    unit_settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, list[tuple[KeyValue, RabbitMessage]]]]:
    """A roundtrip app of its own, its broker on TestRabbitBroker, and what reached `event`."""
    app = create_service("roundtrip", routers=[router], settings=unit_settings)
    broker: RabbitBroker = app.state.runtime.bus.broker
    caught: list[tuple[KeyValue, RabbitMessage]] = []

    @broker.subscriber(app.state.runtime.bus.name(channels.EVENT))
    async def event(kv: KeyValue, message: RabbitMessage) -> None:
        caught.append((kv, message))

    async with TestRabbitBroker(broker):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://roundtrip") as client:
            yield client, caught
    await app.state.runtime.store.close()


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
async def test_an_accepted_key_value_is_published_then_answered_202(
    published: tuple[httpx.AsyncClient, list[tuple[KeyValue, RabbitMessage]]], text: str
) -> None:
    client, caught = published
    answer = await client.post(
        URL, json={"key": text, "value": text}, headers={REQUEST_ID_HEADER: "req-7"}
    )
    assert answer.status_code == 202
    body = answer.json()
    assert (body["key"], body["value"]) == (text, text)

    ((kv, message),) = caught
    assert (str(kv.id), kv.key, kv.value) == (body["id"], text, text)
    assert message.message_id == body["id"]
    assert message.correlation_id == "req-7"


async def test_each_request_gets_its_own_id(
    published: tuple[httpx.AsyncClient, list[tuple[KeyValue, RabbitMessage]]],
) -> None:
    client, caught = published
    ids = {(await client.post(URL, json={"key": "k", "value": "v"})).json()["id"] for _ in range(3)}
    assert len(ids) == 3
    assert {str(kv.id) for kv, _ in caught} == ids


async def test_a_publish_the_broker_refuses_is_503_with_retry_after(
    unit_settings: Settings,
) -> None:
    app = create_service("roundtrip", routers=[router], settings=unit_settings)
    # Nothing consumes `event` here: the in-memory broker refuses the message.
    async with TestRabbitBroker(app.state.runtime.bus.broker):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://roundtrip") as client:
            answer = await client.post(URL, json={"key": "k", "value": "v"})
    await app.state.runtime.store.close()
    problem = _problem(answer, 503)
    assert answer.headers["retry-after"] == "2"
    assert problem["title"] == "Service Unavailable"
