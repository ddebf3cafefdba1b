"""The gateway forwards a request target as the client sent it, and a failure on the way is a
502 problem document naming the request, never a 500 (issue 13)."""

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from apps.gateway.app import create_gateway
from apps.gateway.proxy import BadTarget, upstream_target
from msarch.events import is_event_id
from msarch.observability import TIMEOUT_HEADER
from msarch.settings import SERVICES, Settings
from msarch.testing.isolation import free_port


def _request(raw_path: bytes, query: bytes = b"") -> Request:
    scope = {"type": "http", "method": "GET", "path": raw_path.decode("latin-1"),
             "raw_path": raw_path, "query_string": query, "headers": []}  # fmt: skip
    return Request(scope)


@pytest.mark.parametrize(
    ("raw_path", "query", "target"),
    [
        (b"/api/batch/%00", b"", "/api/batch/%00"),
        (b"/api/batch/a%2Fb", b"limit=%FF%FE&limit=2", "/api/batch/a%2Fb?limit=%FF%FE&limit=2"),
        (b"/api/events", b"after=%0D%0AX:%20y", "/api/events?after=%0D%0AX:%20y"),
    ],
)
def test_the_target_goes_upstream_still_encoded(raw_path: bytes, query: bytes, target: str) -> None:
    assert upstream_target(_request(raw_path, query)) == target


@pytest.mark.parametrize(
    ("raw_path", "query"), [(b"/api/\xff", b""), (b"/api/batch", b"a=\x00"), (b"/api/ x", b"")]
)
def test_bytes_that_are_not_percent_encoded_are_refused(raw_path: bytes, query: bytes) -> None:
    with pytest.raises(BadTarget):
        upstream_target(_request(raw_path, query))


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("0-0", True),
        ("1700000000000-3", True),
        ("18446744073709551615-18446744073709551615", True),
        ("18446744073709551616-0", False),
        ("99999999999999999999-0", False),
        ("0-18446744073709551616", False),
        ("1-", False),
        ("-1-0", False),
        ("1700000000000", False),
        ("1-0\n", False),
    ],
)
def test_an_event_id_is_two_numbers_of_64_bits(text: str, valid: bool) -> None:
    assert is_event_id(text) is valid


@pytest.fixture
def gateway() -> Iterator[TestClient]:
    ports = {f"{s}_port": free_port() for s in SERVICES}
    with TestClient(create_gateway(Settings().model_copy(update=ports))) as client:
        yield client


def test_a_failure_inside_the_proxy_is_a_502_with_the_request_id(
    gateway: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug on the way upstream")

    monkeypatch.setattr(aiohttp.ClientSession, "request", broken)
    answer = gateway.get("/api/batch/batchkeys", headers={"X-Request-Id": "probe-1"})
    assert answer.status_code == 502
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["request_id"] == "probe-1"
    assert "a bug on the way upstream" in answer.json()["detail"]


@pytest.mark.parametrize(("path", "waits_ms"), [("/api/batch", 50_000), ("/api/roundtrip", 10_000)])
def test_the_upstream_is_told_how_long_the_gateway_waits_whatever_the_client_said(
    gateway: TestClient, monkeypatch: pytest.MonkeyPatch, path: str, waits_ms: int
) -> None:
    sent: list[tuple[str, str]] = []

    async def capture(*args: Any, headers: list[tuple[str, str]], **kwargs: Any) -> None:
        sent.extend(headers)
        raise RuntimeError("captured")

    monkeypatch.setattr(aiohttp.ClientSession, "request", capture)
    gateway.post(path, json={}, headers={TIMEOUT_HEADER: "999999999"})
    # The defaults: MSARCH_BATCH_TIMEOUT_S + MSARCH_UPSTREAM_TIMEOUT_S for a batch, else 10 s.
    assert [v for k, v in sent if k.lower() == TIMEOUT_HEADER] == [str(waits_ms)]
