"""create_gateway builds the gateway from the settings it is given: nothing read at import time.

The services behind it are free ports with nothing listening, so every proxied
request ends at the gateway.
"""

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect


def test_its_own_settings_decide_the_api_key(gateway: TestClient) -> None:
    refused = gateway.post("/api/roundtrip", json={"key": "k", "value": "v"})
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"


def test_with_the_key_an_unreachable_service_is_a_503(gateway: TestClient) -> None:
    answer = gateway.post(
        "/api/roundtrip", json={"key": "k", "value": "v"}, headers={"X-API-Key": "the-key"}
    )
    assert answer.status_code == 503
    assert "retry-after" in answer.headers
    assert gateway.get("/api/nothing", headers={"X-API-Key": "the-key"}).status_code == 404


def test_a_websocket_without_the_key_is_closed_with_1008(gateway: TestClient) -> None:
    with gateway.websocket_connect("/ws") as socket, pytest.raises(WebSocketDisconnect) as closed:
        socket.receive_text()
    assert closed.value.code == 1008
