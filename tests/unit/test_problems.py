"""Errors as application/problem+json (msarch.problems) and the body limit (msarch.limits)."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.types import Message, Receive, Scope, Send

from apps.batch.app import app as batch_app
from apps.roundtrip.app import app as roundtrip_app
from msarch.limits import DEFAULT_MAX_BODY, BodyLimit
from msarch.problems import PROBLEM_JSON, Problem, unavailable
from msarch.service import create_app
from msarch.storage import NotReplicatedError


class Body(BaseModel):
    name: str
    count: int


def _app() -> FastAPI:
    app = create_app("test")

    @app.post("/echo")
    async def echo(body: Body) -> Body:
        return body

    @app.get("/teapot")
    async def teapot() -> None:
        raise Problem(
            418, "I'm a teapot", "short and stout", headers={"X-Why": "tea"}, batch_id="b-1"
        )

    @app.get("/busy")
    async def busy() -> Any:
        return unavailable("redis is reloading", retry_after_s=7)

    @app.get("/unreplicated")
    async def unreplicated() -> None:
        raise NotReplicatedError("0 of 1 replicas confirmed the write to k within 2000 ms")

    @app.get("/redis-down")
    async def redis_down() -> None:
        raise RedisTimeoutError("Timeout reading from 127.0.0.1:6379")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as value:
        yield value


def _problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    return body


async def test_a_raised_problem_keeps_its_title_detail_headers_and_extras(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/teapot")
    assert _problem(answer, 418) == {
        "type": "about:blank",
        "title": "I'm a teapot",
        "status": 418,
        "detail": "short and stout",
        "batch_id": "b-1",
    }
    assert answer.headers["x-why"] == "tea"


async def test_unavailable_is_503_with_retry_after(client: httpx.AsyncClient) -> None:
    answer = await client.get("/busy")
    assert _problem(answer, 503)["detail"] == "redis is reloading"
    assert answer.headers["retry-after"] == "7"


@pytest.mark.parametrize(
    ("path", "detail"),
    [("/unreplicated", "0 of 1 replicas confirmed"), ("/redis-down", "Timeout reading")],
)
async def test_redis_unavailable_in_a_route_is_503_not_500(
    client: httpx.AsyncClient, path: str, detail: str
) -> None:
    answer = await client.get(path)
    assert detail in _problem(answer, 503)["detail"]
    assert answer.headers["retry-after"] == "2"


async def test_a_validation_error_lists_where_not_what(client: httpx.AsyncClient) -> None:
    secret = "s3cret-" * 1000
    answer = await client.post("/echo", json={"name": 5, "count": secret})
    problem = _problem(answer, 422)
    assert problem["title"] == "Invalid input"
    assert [e["loc"] for e in problem["errors"]] == [["body", "name"], ["body", "count"]]
    assert all(set(e) == {"loc", "msg", "type"} for e in problem["errors"])
    assert "body.name" in problem["detail"]
    assert "body.count" in problem["detail"]
    assert "s3cret" not in answer.text


@pytest.mark.parametrize(
    ("method", "path", "status", "title"),
    [
        ("GET", "/nowhere", 404, "Not Found"),
        ("GET", "/echo", 405, "Method Not Allowed"),
        ("DELETE", "/teapot", 405, "Method Not Allowed"),
    ],
)
async def test_http_errors_are_problems(
    client: httpx.AsyncClient, method: str, path: str, status: int, title: str
) -> None:
    assert _problem(await client.request(method, path), status)["title"] == title


@pytest.mark.parametrize("app", [roundtrip_app, batch_app], ids=["roundtrip", "batch"])
@pytest.mark.parametrize(
    "body", [b"\xff", b'{"key": "\xff", "value": "v", "size": 1}'], ids=["alone", "in-a-string"]
)
async def test_a_body_that_is_not_utf8_is_a_422_invalid_input(app: FastAPI, body: bytes) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        path = "/api/roundtrip" if app is roundtrip_app else "/api/batch"
        answer = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert answer.status_code == 422
    assert answer.json()["title"] == "Invalid input"


# -- the body limit ---------------------------------------------------------------------------


async def test_a_body_at_the_limit_is_read(client: httpx.AsyncClient) -> None:
    padding = DEFAULT_MAX_BODY - len('{"name": "", "count": 1}')
    body = ('{"name": "' + "n" * padding + '", "count": 1}').encode()
    assert len(body) == DEFAULT_MAX_BODY
    answer = await client.post("/echo", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200
    assert answer.json()["count"] == 1


async def test_a_body_one_byte_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    body = b"x" * (DEFAULT_MAX_BODY + 1)
    answer = await client.post("/echo", content=body, headers={"content-type": "application/json"})
    problem = _problem(answer, 413)
    assert problem["title"] == "Payload Too Large"
    assert answer.headers["connection"] == "close"


async def _drive(
    max_body: int, chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[list[Message], int]:
    """Run BodyLimit over a small app that reads the whole body; (what was sent, bytes read)."""
    read = 0

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal read
        more = True
        while more:
            message = await receive()
            read += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    incoming = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or []}
    await BodyLimit(inner, max_body=max_body)(scope, receive, send)
    return sent, read


async def test_the_limit_counts_streamed_chunks() -> None:
    sent, read = await _drive(10, [b"12345", b"67890", b"1"])
    assert sent[0]["status"] == 413
    assert read <= 10
    assert sent[0]["headers"][0] == (b"content-type", PROBLEM_JSON.encode())


async def test_chunks_up_to_the_limit_pass() -> None:
    sent, read = await _drive(10, [b"12345", b"67890"])
    assert sent[0]["status"] == 200
    assert read == 10


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    sent, read = await _drive(10, [b"x"], headers=[(b"content-length", b"11")])
    assert sent[0]["status"] == 413
    assert read == 0


async def test_a_malformed_content_length_is_not_trusted() -> None:
    sent, _ = await _drive(10, [b"x" * 11], headers=[(b"content-length", b"1e3")])
    assert sent[0]["status"] == 413


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        raise AssertionError("BodyLimit must not answer a websocket")

    await BodyLimit(inner, max_body=1)({"type": "websocket"}, receive, send)
    await BodyLimit(inner, max_body=1)({"type": "lifespan"}, receive, send)
    assert seen == ["websocket", "lifespan"]
