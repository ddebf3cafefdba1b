"""Registration in Consul and lookup through it, against a test double of Consul's HTTP API.

The double (tests/utils/consul_double.py) stands in for the Consul agent
because no Consul agent binary can be installed on these machines; the compose
deployment (infra/compose.yaml) runs the real agent.
"""

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

import msarch
from apps.gateway.upstreams import BREAKER_THRESHOLD, ConsulUpstreams
from msarch.discovery import (
    ConsulClient,
    Instance,
    advertised_host,
    keep_registered,
    registered,
    registration_of,
    unreachable_reason,
)
from msarch.settings import Settings
from msarch.testing.isolation import free_port
from msarch.testing.stack import wait_for
from tests.utils.consul_double import ConsulDouble

A, B, C = "http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"


@pytest.fixture
def consul_double() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        yield double


@pytest.fixture
def two_roundtrips(consul_double: ConsulDouble) -> ConsulDouble:
    """Two passing roundtrip instances and a critical one."""
    consul_double.add("roundtrip-a", "roundtrip", 9001)
    consul_double.add("roundtrip-b", "roundtrip", 9002)
    consul_double.add("roundtrip-c", "roundtrip", 9003, status="critical")
    return consul_double


def settings_for(double: ConsulDouble, **overrides: Any) -> Settings:
    return Settings(consul_url=double.url, host="127.0.0.1", **overrides)


def upstreams_for(double: ConsulDouble, interval_s: float = 0.1) -> ConsulUpstreams:
    return ConsulUpstreams(ConsulClient(double.url, timeout_s=1.0), ["roundtrip"], interval_s)


def lower(payload: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in payload.items()}


async def test_registers_with_a_health_check_and_deregisters_on_shutdown(
    consul_double: ConsulDouble,
) -> None:
    settings = settings_for(consul_double)
    async with registered("roundtrip", settings, 8123, instance="roundtrip-abc123"):
        await wait_for(lambda: "roundtrip-abc123" in consul_double.services, 5)
        assert consul_double.deregistrations == []
    [sent] = consul_double.registrations
    payload = lower(sent)
    assert payload["name"] == "roundtrip"
    assert payload["id"] == "roundtrip-abc123"
    assert payload["address"] == "127.0.0.1"
    assert payload["port"] == 8123
    assert payload["meta"] == {"version": msarch.__version__, "instance": "roundtrip-abc123"}
    assert f"v{msarch.__version__}" in payload["tags"]
    [check] = payload["checks"]
    assert check["http"] == "http://127.0.0.1:8123/health"
    assert check["interval"] == "5s"
    assert check["DeregisterCriticalServiceAfter"] == "1m"
    assert consul_double.deregistrations == ["roundtrip-abc123"]
    assert consul_double.services == {}


async def test_without_consul_url_nothing_registers() -> None:
    async with registered("batch", Settings(consul_url=None), 8124) as registration:
        assert registration is None


def test_advertised_address() -> None:
    assert advertised_host(Settings(host="10.1.2.3")) == "10.1.2.3"
    assert advertised_host(Settings(host="0.0.0.0", advertise_host="batch")) == "batch"
    registration = registration_of("batch", Settings(host="10.1.2.3"), 8002)
    assert registration.id == "batch-10.1.2.3-8002"
    # Started again at the same address, an instance replaces its stale registration.
    assert registration_of("batch", Settings(host="10.1.2.3"), 8002).id == registration.id
    assert registration_of("batch", Settings(host="10.1.2.3"), 8012).id != registration.id


def own_address() -> str:
    """An address of this machine that is not loopback (`ip` from Debian's iproute2)."""
    lines = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    addresses = [line.split()[3].split("/")[0] for line in lines]
    assert addresses, "this machine has no network interface but loopback"
    return addresses[0]


def test_bound_to_every_interface_it_advertises_its_address_on_the_route_to_consul() -> None:
    """As in a container: uvicorn on 0.0.0.0, Consul elsewhere; never 127.0.0.1 then."""
    own = own_address()
    local = Settings(host="0.0.0.0", consul_url="http://127.0.0.1:8500")
    assert advertised_host(local) == "127.0.0.1"
    elsewhere = Settings(host="0.0.0.0", consul_url=f"http://{own}:8500")
    assert advertised_host(elsewhere) == own
    registration = registration_of("batch", elsewhere, 8002)
    assert registration.check_url == f"http://{own}:8002/health"


def test_a_loopback_registration_with_a_remote_consul_is_refused_loudly() -> None:
    loopback = registration_of("roundtrip", Settings(host="127.0.0.1"), 8001, "roundtrip-1")
    reason = unreachable_reason(loopback, "http://consul:8500")
    assert reason is not None
    assert "roundtrip-1 advertises 127.0.0.1" in reason
    assert "MSARCH_HOST=0.0.0.0" in reason
    assert unreachable_reason(loopback, "http://127.0.0.1:8500") is None
    routed = registration_of("roundtrip", Settings(host="10.1.2.3"), 8001)
    assert unreachable_reason(routed, "http://consul:8500") is None


async def test_a_loopback_registration_with_a_remote_consul_is_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    own = own_address()  # not loopback, and nothing listens there
    settings = Settings(host="127.0.0.1", consul_url=f"http://{own}:{free_port()}")
    with caplog.at_level(logging.ERROR, logger="msarch.discovery"):
        async with registered("store", settings, 8004, instance="store-9"):
            pass
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("store-9 advertises 127.0.0.1" in r.getMessage() for r in errors)


async def test_registration_retries_in_the_background_while_consul_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    double = ConsulDouble()  # not started yet: Consul is unreachable
    settings = settings_for(double)
    with caplog.at_level(logging.WARNING, logger="msarch.discovery"):
        async with registered("batch", settings, 8124, instance="batch-1"):
            await wait_for(lambda: "cannot register in Consul" in caplog.text, 5)
            double.start()
            try:
                await wait_for(lambda: "batch-1" in double.services, 10)
            finally:
                double.stop()
    # One warning for the outage, not one per retry; and no deregistration crash either.
    assert caplog.text.count("cannot register in Consul") == 1
    assert "could not deregister from Consul" in caplog.text


async def test_registers_again_when_consul_forgot_it(consul_double: ConsulDouble) -> None:
    client = ConsulClient(consul_double.url)
    registration = registration_of("store", settings_for(consul_double), 8004, "store-1")
    keeper = asyncio.create_task(keep_registered(client, registration, recheck_s=0.1))
    try:
        await wait_for(lambda: "store-1" in consul_double.services, 5)
        consul_double.forget("store-1")
        await wait_for(lambda: "store-1" in consul_double.services, 5)
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
    assert len(consul_double.registrations) == 2


async def test_lookup_lists_only_passing_instances(two_roundtrips: ConsulDouble) -> None:
    found = await ConsulClient(two_roundtrips.url).healthy("roundtrip")
    assert found == [
        Instance("roundtrip-a", "127.0.0.1", 9001),
        Instance("roundtrip-b", "127.0.0.1", 9002),
    ]
    assert await ConsulClient(two_roundtrips.url).healthy("batch") == []


async def test_round_robin_over_the_passing_instances(two_roundtrips: ConsulDouble) -> None:
    async with upstreams_for(two_roundtrips) as upstreams:
        firsts = [upstreams.candidates("roundtrip")[0] for _ in range(6)]
        assert upstreams.candidates("roundtrip") in ([A, B], [B, A])
    assert firsts == [A, B, A, B, A, B]
    assert C not in firsts


async def test_cache_is_kept_while_consul_is_unreachable(two_roundtrips: ConsulDouble) -> None:
    async with upstreams_for(two_roundtrips) as upstreams:
        assert upstreams.instances("roundtrip") == [A, B]
        two_roundtrips.stop()
        await asyncio.sleep(0.5)  # several refreshes fail meanwhile
        assert upstreams.instances("roundtrip") == [A, B]
        assert len(upstreams.candidates("roundtrip")) == 2
        two_roundtrips.forget("roundtrip-b")
        two_roundtrips.start()
        await wait_for(lambda: upstreams.instances("roundtrip") == [A], 5)


async def test_an_instance_that_fails_is_dropped(two_roundtrips: ConsulDouble) -> None:
    async with upstreams_for(two_roundtrips) as upstreams:
        for _ in range(BREAKER_THRESHOLD):
            upstreams.failed(A, "connection refused")
        # Its breaker dropped it at once, before Consul noticed.
        assert [upstreams.candidates("roundtrip") for _ in range(3)] == [[B]] * 3
        assert upstreams.instances("roundtrip") == [A, B]
        # Then Consul's check fails too, and the next refresh drops it for good.
        two_roundtrips.set_status("roundtrip-a", "critical")
        await wait_for(lambda: upstreams.instances("roundtrip") == [B], 5)
        for _ in range(BREAKER_THRESHOLD):
            upstreams.failed(B, "connection refused")
        assert upstreams.candidates("roundtrip") == []
        assert 1 <= upstreams.retry_after_s("roundtrip") <= 5


async def test_no_instance_known_means_retry_after_the_discovery_interval(
    consul_double: ConsulDouble,
) -> None:
    async with upstreams_for(consul_double, interval_s=2.0) as upstreams:
        assert upstreams.candidates("roundtrip") == []
        assert upstreams.retry_after_s("roundtrip") == 2


async def test_gateway_without_consul_uses_static_addresses() -> None:
    from apps.gateway.upstreams import StaticUpstreams, upstreams_of

    port = free_port()
    upstreams = upstreams_of(Settings(host="127.0.0.1", roundtrip_port=port))
    assert isinstance(upstreams, StaticUpstreams)
    assert upstreams.candidates("roundtrip") == [f"http://127.0.0.1:{port}"]
