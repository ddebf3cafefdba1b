"""A real Prometheus (Debian's) scrapes a running stack with the project's scrape configuration
(infra/prometheus.yml, each job's DNS names swapped for the stack's address) and has every
service's series through its HTTP API: publishes and confirms, consumes by outcome, handler
latency, consumer lag, dead letters, HTTP requests by route and status, websocket clients,
batch sizes and durations, Redis script latency. Every query of the Grafana dashboard runs on
it and, where the stack has the series, shows data."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from msarch.settings import SERVICES
from msarch.testing.stack import Stack, wait_for
from tests.utils.dashboard import load_dashboard, queries
from tests.utils.prometheus import Prometheus, for_stack, project_config, running_prometheus
from tests.utils.series import Expected, expected_series, metric_names

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SCRAPE_EVERY_S = 1.0
SERIES_TIMEOUT_S = 45.0
"""Long enough for the slowest refresh behind a series (the dead-letter count, every 10 s)."""
ROUNDTRIPS = 3


async def test_prometheus_has_every_series_of_every_service(stack: Stack, tmp_path: Path) -> None:
    async with websockets.connect(stack.ws_url) as client:  # connected until the checks are done
        await _traffic(stack, client)
        config = for_stack(project_config(), stack.settings, SCRAPE_EVERY_S)
        async with running_prometheus(config, tmp_path) as prometheus:
            await wait_for(
                lambda: _every_job_up(prometheus), 60, 0.5, f"a target up for each of {SERVICES}"
            )
            expected = expected_series(stack.settings.namespace)
            missing = await _settled(lambda: _missing(prometheus, expected))
            assert missing == [], "not in Prometheus as expected:\n" + "\n".join(missing)
            empty = await _settled(lambda: _dashboard_without_data(prometheus, expected))
            assert empty == [], "dashboard queries with no data:\n" + "\n".join(empty)


async def _traffic(stack: Stack, client: websockets.ClientConnection) -> None:
    """Roundtrips (each pushed to `client`), a batch and a bad request, each answered as it
    should be: every series then has something to show."""
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        ids = set()
        for index in range(ROUNDTRIPS):
            answer = await http.post("/api/roundtrip", json={"key": f"prom-{index}", "value": "v"})
            assert answer.status_code == 202, answer.text
            ids.add(answer.json()["id"])
        async with asyncio.timeout(30):
            while ids:
                ids.discard(json.loads(await client.recv()).get("id"))
        batch = await http.post("/api/batch", json={"size": 5})
        assert batch.status_code == 200, batch.text
        bad = await http.post("/api/roundtrip", json={"key": ""})
        assert bad.status_code == 422, bad.text


async def _every_job_up(prometheus: Prometheus) -> bool:
    return await prometheus.up_jobs() >= set(SERVICES)


async def _missing(prometheus: Prometheus, expected: list[Expected]) -> list[str]:
    """What is absent, or has less than its traffic: one line each."""
    problems = []
    for series in expected:
        result = await prometheus.query(f"sum({series.selector})")
        if not result:
            problems.append(f"{series.selector}: absent")
            continue
        value = float(result[0]["value"][1])
        if series.at_least is not None and not value >= series.at_least:
            problems.append(f"{series.selector} = {value:g}, expected at least {series.at_least:g}")
    return problems


async def _dashboard_without_data(prometheus: Prometheus, expected: list[Expected]) -> list[str]:
    """The dashboard's queries that Prometheus answers with nothing although the stack exports
    every series they read (a query Prometheus refuses raises)."""
    families = {series.family for series in expected}
    empty = []
    for title, expr in queries(load_dashboard()):
        exported = all(_of_a_family(name, families) for name in metric_names(expr))
        if exported and not await prometheus.query(expr):
            empty.append(f"{title}: {expr}")
    return empty


def _of_a_family(name: str, families: set[str]) -> bool:
    return any(name == family or name.startswith(f"{family}_") for family in families)


async def _settled(check: Callable[[], Awaitable[list[Any]]]) -> list[Any]:
    """`check`'s problems once there are none, or as they stand after SERIES_TIMEOUT_S."""
    problems = await check()
    try:
        async with asyncio.timeout(SERIES_TIMEOUT_S):
            while problems:
                await asyncio.sleep(1)
                problems = await check()
    except TimeoutError:
        pass
    return problems
