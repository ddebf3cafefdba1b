"""The gateway's own behaviour: request ids, the API key, the circuit breaker, Consul discovery.

Discovery runs against the Consul test double (tests/utils/consul_double.py),
because no Consul agent binary can be installed on these machines; compose
runs the real agent.
"""

import asyncio
import time
from typing import Any
from uuid import uuid4

import httpx
import pytest
import websockets

from msarch.testing.stack import Stack, wait_for
from tests.utils.consul_double import ConsulDouble
from tests.utils.figures import report
from tests.utils.fixture_api import API_KEY

pytestmark = pytest.mark.e2e


async def _events_where(
    client: httpx.AsyncClient, stack: Stack, match: Any, timeout_s: float = 15.0
) -> list[dict[str, Any]]:
    """The event log's events for which match(event) is true, once there is at least one."""
    found: list[dict[str, Any]] = []

    async def scan() -> bool:
        after: str | None = None
        found.clear()
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"after": after} if after else {})}
            page = (await client.get(f"{stack.gateway_url}/api/events", params=params)).json()
            found.extend(e for e in page["events"] if match(e))
            if page["next_after"] is None:
                return bool(found)
            after = page["next_after"]

    await wait_for(scan, timeout_s, interval_s=0.2)
    return found


async def test_request_id_is_the_correlation_id_in_the_event_log(stack: Stack) -> None:
    roundtrip_rid, batch_rid = f"rt-{uuid4().hex}", f"batch-{uuid4().hex}"
    async with httpx.AsyncClient(timeout=60) as client:
        accepted = await client.post(
            f"{stack.gateway_url}/api/roundtrip",
            json={"key": "traced", "value": "v"},
            headers={"X-Request-ID": roundtrip_rid},
        )
        assert accepted.status_code == 202
        assert accepted.headers["x-request-id"] == roundtrip_rid
        batch = await client.post(
            f"{stack.gateway_url}/api/batch", json={"size": 3}, headers={"X-Request-ID": batch_rid}
        )
        assert batch.status_code == 200, batch.text
        kv_id, batch_id = accepted.json()["id"], batch.json()["batch_id"]

        [stored] = await _events_where(client, stack, lambda e: e["message_id"] == kv_id)
        batch_events = await _events_where(
            client,
            stack,
            lambda e: e["payload"].get("batch_id") == batch_id and e["type"] == "BatchCommitted",
        )
        everything_of_batch = await _events_where(
            client, stack, lambda e: e["payload"].get("batch_id") == batch_id
        )
    assert stored["type"] == "KeyValueStored"
    assert stored["correlation_id"] == roundtrip_rid
    assert batch_events, "the batch committed"
    assert {e["correlation_id"] for e in everything_of_batch} == {batch_rid}


async def test_a_generated_request_id_is_echoed(stack: Stack) -> None:
    async with httpx.AsyncClient() as client:
        first = await client.get(f"{stack.gateway_url}/api/batch/batchkeys")
        second = await client.get(f"{stack.gateway_url}/api/batch/batchkeys")
    assert first.status_code == 200
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2
    assert all(len(i) >= 16 for i in ids)


async def test_api_key_is_required_on_api_and_ws_only(keyed_stack: Stack) -> None:
    url = f"{keyed_stack.gateway_url}/api/roundtrip"
    body = {"key": "keyed", "value": "v"}
    async with httpx.AsyncClient(timeout=10) as client:
        missing = await client.post(url, json=body)
        wrong = await client.post(url, json=body, headers={"X-API-Key": API_KEY + "x"})
        events = await client.get(f"{keyed_stack.gateway_url}/api/events")
        dead = await client.get(f"{keyed_stack.gateway_url}/api/dead")
        dead_keyed = await client.get(
            f"{keyed_stack.gateway_url}/api/dead", headers={"X-API-Key": API_KEY}
        )
        open_pages = {
            path: (await client.get(keyed_stack.gateway_url + path)).status_code
            for path in ("/health", "/metrics", "/", "/docs", "/openapi.json")
        }
        schema = (await client.get(f"{keyed_stack.gateway_url}/openapi.json")).json()
        frames: list[str] = []
        ws_url = f"{keyed_stack.ws_url}?api_key={API_KEY}"
        async with websockets.connect(ws_url) as socket:
            accepted = await client.post(url, json=body, headers={"X-API-Key": API_KEY})
            frames.append(str(await asyncio.wait_for(socket.recv(), 10)))
    assert dead_keyed.status_code == 200, dead_keyed.text
    for refused in (missing, wrong, events, dead):
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["title"] == "Unauthorized"
        assert "X-API-Key" in refused.json()["detail"]
        assert "www-authenticate" in refused.headers
    assert open_pages == dict.fromkeys(open_pages, 200)
    scheme = schema["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    assert schema["security"] == [{}, {"ApiKey": []}], "documented as optional"
    assert accepted.status_code == 202
    assert accepted.json()["id"] in frames[0]


async def test_ws_without_the_api_key_is_closed_with_policy_violation(keyed_stack: Stack) -> None:
    for url in (keyed_stack.ws_url, f"{keyed_stack.ws_url}?api_key=wrong"):
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with websockets.connect(url) as socket:
                await asyncio.wait_for(socket.recv(), 5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        assert "api_key" in closed.value.rcvd.reason


async def test_breaker_opens_on_a_dead_upstream_and_closes_after_it_returns(
    private_stack: Stack,
) -> None:
    await private_stack.processes["roundtrip"].kill()
    url = f"{private_stack.gateway_url}/api/roundtrip"
    async with httpx.AsyncClient(timeout=10) as client:
        down = [await client.post(url, json={"key": "k", "value": "v"}) for _ in range(4)]
        for response in down:
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert "no healthy instance" in response.json()["detail"]
        # Three failures opened the breaker: the fourth was refused without trying, 5 s to go.
        assert int(down[-1].headers["retry-after"]) == 5
        await private_stack.restart("roundtrip")
        await asyncio.sleep(int(down[-1].headers["retry-after"]))
        up = await client.post(url, json={"key": "k", "value": "v"})
    assert up.status_code == 202, up.text


async def _gateway_sees(stack: Stack, service: str, instances: int) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        health = (await client.get(f"{stack.gateway_url}/health")).json()
    return bool(health["upstreams"][service].get("instances") == instances)


async def test_discovery_routes_around_an_instance_killed_with_sigkill(
    consul_stack: Stack, consul_double: ConsulDouble
) -> None:
    """Fault 12 of issue 7: kill -9 one of two roundtrip instances: not a single 5xx."""
    second = await consul_stack.add_instance("roundtrip")
    await wait_for(lambda: len(consul_double.instances_of("roundtrip", passing_only=True)) == 2, 15)
    await wait_for(lambda: _gateway_sees(consul_stack, "roundtrip", 2), 15)
    registered = consul_double.instances_of("roundtrip")
    assert {"gateway", "batch", "websocket", "store"} <= {
        s["name"] for s in consul_double.services.values()
    }

    url = f"{consul_stack.gateway_url}/api/roundtrip"
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=10) as client:

        async def stream(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                answer = await client.post(url, json={"key": "rr", "value": str(len(statuses))})
                statuses.append(answer.status_code)

        await stream(1.0)
        await consul_stack.processes["roundtrip"].kill()
        # Consul's check (every 1 s in the double) and the gateway's refresh (2 s) catch up.
        await stream(consul_stack.settings.discovery_interval_s + 2.0)
        assert len(consul_double.instances_of("roundtrip", passing_only=True)) == 1
        await wait_for(lambda: _gateway_sees(consul_stack, "roundtrip", 1), 10)
        await stream(1.0)
    report(
        "test_discovery_routes_around_an_instance_killed_with_sigkill",
        requests=len(statuses),
        server_errors=sum(1 for s in statuses if s >= 500),
        statuses=sorted(set(statuses)),
        discovery_interval_s=consul_stack.settings.discovery_interval_s,
    )
    assert statuses, "no request was sent"
    assert [s for s in statuses if s >= 500] == []
    assert set(statuses) == {202}

    # A graceful stop deregisters at once instead of waiting to be found dead.
    await second.stop()
    gone = set(registered) - set(consul_double.instances_of("roundtrip"))
    assert len(gone) == 1
    assert gone <= set(consul_double.deregistrations)
