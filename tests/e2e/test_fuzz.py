"""Hostile input against the running stack: no probe gets a 5xx or a dropped connection.

Schemathesis (tests/e2e/test_api_contract.py) sends what the schema allows; these probes send
what it does not: every byte percent-encoded in every path parameter and query parameter,
overlong and invalid UTF-8, broken escapes, numbers beyond every range, repeated and thousands
of parameters, every byte in a header value, oversized header sets. Each route is probed
through the gateway and directly at the service that serves it.
"""

import json

import httpx
import pytest

from msarch.asyncapi import backend_of
from msarch.testing.stack import Stack
from tests.utils.figures import Figures
from tests.utils.hostile import Findings, Probe, Route, address_of, probes_of, run, send

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROUNDTRIP = Route("POST", "/api/roundtrip", body=json.dumps({"key": "fuzz", "value": "v"}).encode())
BATCH = Route("POST", "/api/batch", body=json.dumps({"size": 1}).encode())
BATCH_KEYS = Route("GET", "/api/batch/batchkeys", ("offset", "limit"))
EVENTS = Route("GET", "/api/events", ("after", "limit"))
WS = Route("GET", "/ws", ("after",))
HEALTH = Route("GET", "/health")
METRICS = Route("GET", "/metrics")


def batch_routes(batch_id: str) -> list[Route]:
    return [
        BATCH,
        BATCH_KEYS,
        Route("GET", "/api/batch/batchvalues/{}", ("offset", "limit"), sample=batch_id),
        Route("GET", "/api/batch/{}", sample=batch_id),
    ]


def routes_by_target(batch_id: str) -> dict[str, list[Route]]:
    """What to probe on each service; the first route of each also gets the header probes."""
    return {
        "gateway": [
            EVENTS,  # the header probes on a proxied route: the gateway forwards headers
            HEALTH,
            ROUNDTRIP,
            *batch_routes(batch_id),
            WS,
            METRICS,
            Route("GET", "/"),
            Route("GET", "/client/{}", sample="app.js"),
            Route("GET", "/docs"),
            Route("GET", "/openapi.json"),
            Route("GET", "/docs/asyncapi.json", ("backend",)),
        ],
        "roundtrip": [HEALTH, ROUNDTRIP, METRICS],
        "batch": [HEALTH, *batch_routes(batch_id), METRICS],
        "websocket": [HEALTH, EVENTS, WS, METRICS],
        "store": [HEALTH, METRICS],
    }


@pytest.mark.timeout(900)
async def test_no_probe_gets_a_5xx_or_a_dropped_connection(stack: Stack, figures: Figures) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        batch = await client.post(f"{stack.gateway_url}/api/batch", json={"size": 2})
    assert batch.status_code == 200, batch.text
    per_route: dict[str, int] = {}
    found: dict[str, Findings] = {}
    for service, routes in routes_by_target(batch.json()["batch_id"]).items():
        probes = {route: list(probes_of(route, headers=n == 0)) for n, route in enumerate(routes)}
        for route, of_route in probes.items():
            per_route[f"{service} {route.method} {route.path}"] = len(of_route)
        everything = [probe for of_route in probes.values() for probe in of_route]
        found[service] = await run(stack.settings.url_of(service), everything)
    figures(
        backend=backend_of(stack.settings.broker_url),
        probes={service: f.probes for service, f in found.items()},
        statuses={service: dict(sorted(f.statuses.items())) for service, f in found.items()},
        per_route=per_route,
    )
    bad = {service: f.report() for service, f in found.items() if f.bad}
    assert not bad, "\n".join(f"{service}:\n{report}" for service, report in bad.items())


async def test_the_answers_the_issue_found_wrong_are_4xx(stack: Stack) -> None:
    """The three answers of issue 13: a 500, a dropped connection, a 500 from the websocket
    service; each with a problem document now."""
    host, port = address_of(stack.gateway_url)
    for target in (
        "/api/batch/%00",
        "/api/batch/batchvalues/%00",
        "/api/events?after=99999999999999999999-0",
    ):
        status = await send(host, port, Probe("GET", target))
        assert 400 <= status < 500, (target, status)
