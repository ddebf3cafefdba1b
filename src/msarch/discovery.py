"""Service discovery through Consul: every instance registers itself, the gateway looks them up.

Without MSARCH_CONSUL_URL nothing registers and the gateway uses the static
addresses (Settings.url_of). py-consul is synchronous (requests): each call
runs in a worker thread, so the event loop never waits on Consul. Consul being
down never stops a service: registration is retried in the background.
"""

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit

import consul  # type: ignore[import-untyped]
import requests

import msarch
from msarch.embedded import LOCAL_HOSTS
from msarch.settings import Settings

log = logging.getLogger("msarch.discovery")

T = TypeVar("T")

CHECK_INTERVAL = "5s"
CHECK_TIMEOUT = "2s"
# An instance that died without deregistering is removed after a minute of failing checks.
DEREGISTER_CRITICAL_AFTER = "1m"
# How often a registered instance makes sure Consul still knows it (an agent may lose it).
RECHECK_S = 10.0
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0
CONSUL_TIMEOUT_S = 3.0


class ConsulUnavailable(Exception):
    """Consul could not be reached or refused the call."""


@dataclass(frozen=True)
class Instance:
    """One healthy instance of a service, as Consul lists it."""

    id: str
    address: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{_host_port(self.address, self.port)}"


@dataclass(frozen=True)
class Registration:
    """What an instance tells Consul about itself."""

    id: str
    name: str
    address: str
    port: int
    check_url: str

    def as_kwargs(self) -> dict[str, Any]:
        """The arguments of py-consul's agent.service.register."""
        check: dict[str, Any] = consul.Check.http(
            self.check_url,
            CHECK_INTERVAL,
            timeout=CHECK_TIMEOUT,
            deregister=DEREGISTER_CRITICAL_AFTER,
        )
        return {
            "name": self.name,
            "service_id": self.id,
            "address": self.address,
            "port": self.port,
            "tags": ["msarch", f"v{msarch.__version__}"],
            "meta": {"version": msarch.__version__, "instance": self.id},
            "check": check,
            "replace_existing_checks": True,
        }


WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def advertised_host(settings: Settings) -> str:
    """The address Consul's checks and the gateway can reach this instance at.

    MSARCH_ADVERTISE_HOST when set (in Kubernetes: the pod IP). Else MSARCH_HOST when
    it names one address. Bound to every interface (0.0.0.0, as in a container): this
    machine's address on the route to Consul, the one Consul sees our packets come from.
    """
    if settings.advertise_host:
        return settings.advertise_host
    if settings.host not in WILDCARD_HOSTS:
        return settings.host
    return address_towards(settings.consul_url or "")


def consul_address(url: str) -> SplitResult:
    """MSARCH_CONSUL_URL split, with or without its scheme (`consul:8500` means http)."""
    return urlsplit(url if "//" in url else f"http://{url}")


def address_towards(url: str) -> str:
    """The local address of the route to url's host (no packet is sent: a UDP connect)."""
    parts = consul_address(url)
    host, port = parts.hostname, parts.port or 8500
    with contextlib.suppress(OSError):
        if host:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM
            )[0]
            with socket.socket(family, kind, proto) as probe:
                probe.connect(address)
                local: str = probe.getsockname()[0]
                return local
    return socket.gethostbyname(socket.gethostname())


def unreachable_reason(registration: "Registration", consul_url: str) -> str | None:
    """Why Consul at consul_url cannot reach what this registration advertises, if it cannot."""
    consul_host = consul_address(consul_url).hostname
    if registration.address in LOCAL_HOSTS and consul_host not in LOCAL_HOSTS:
        return (
            f"{registration.id} advertises {registration.address}, a loopback address, but "
            f"Consul at {consul_url} runs elsewhere: its health checks and the gateway "
            "cannot reach this instance. Listen on every interface (MSARCH_HOST=0.0.0.0) "
            "or set MSARCH_ADVERTISE_HOST to an address Consul can reach"
        )
    return None


def registration_of(
    name: str, settings: Settings, port: int, instance: str | None = None
) -> Registration:
    address = advertised_host(settings)
    return Registration(
        # One id per address: a restarted instance (a container started again, same address)
        # replaces its own stale registration instead of being listed twice.
        id=instance or f"{name}-{address}-{port}",
        name=name,
        address=address,
        port=port,
        check_url=f"http://{_host_port(address, port)}/health",
    )


class ConsulClient:
    """The few Consul calls msarch makes, typed, off the event loop, failing one way."""

    def __init__(self, url: str, timeout_s: float = CONSUL_TIMEOUT_S) -> None:
        parts = consul_address(url)
        self.url = url
        self._consul = consul.Consul(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 8500,
            scheme=parts.scheme or "http",
            connections_timeout=timeout_s,
        )

    async def register(self, registration: Registration) -> None:
        await self._call(self._consul.agent.service.register, **registration.as_kwargs())

    async def deregister(self, service_id: str) -> None:
        await self._call(self._consul.agent.service.deregister, service_id)

    async def is_registered(self, service_id: str) -> bool:
        services: dict[str, Any] = await self._call(self._consul.agent.services)
        return service_id in services

    async def healthy(self, service: str) -> list[Instance]:
        """The instances whose checks all pass: GET /v1/health/service/<name>?passing."""
        _, entries = await self._call(self._consul.health.service, service, passing=True)
        return [
            Instance(
                id=entry["Service"]["ID"],
                # An empty service address means "the node's address" in Consul.
                address=entry["Service"]["Address"] or entry["Node"]["Address"],
                port=int(entry["Service"]["Port"]),
            )
            for entry in entries or []
        ]

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except (requests.RequestException, consul.ConsulException) as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ConsulUnavailable(f"Consul at {self.url}: {reason}") from exc


async def keep_registered(
    client: ConsulClient, registration: Registration, recheck_s: float = RECHECK_S
) -> None:
    """Register; retry while Consul is unreachable; register again if Consul forgot us."""
    delay, known, failing = FIRST_RETRY_S, False, False
    where = {"service_id": registration.id, "consul": client.url}
    while True:
        try:
            if not known or not await client.is_registered(registration.id):
                await client.register(registration)
                log.info("registered in Consul", extra=where)
            known, failing, delay = True, False, recheck_s
        except ConsulUnavailable as exc:
            if failing:
                delay = min(delay * 2, MAX_RETRY_S)
            else:
                log.warning(
                    "cannot register in Consul (%s); the service runs on and retries "
                    "in the background, but the gateway will not find it until then",
                    exc,
                    extra=where,
                )
                failing, delay = True, FIRST_RETRY_S
        await asyncio.sleep(delay)


@contextlib.asynccontextmanager
async def registered(
    name: str, settings: Settings, port: int, *, instance: str | None = None
) -> AsyncIterator[Registration | None]:
    """While inside, this instance is registered in Consul; a no-op without MSARCH_CONSUL_URL."""
    if not settings.consul_url:
        yield None
        return
    client = ConsulClient(settings.consul_url)
    registration = registration_of(name, settings, port, instance)
    if reason := unreachable_reason(registration, settings.consul_url):
        log.error("%s", reason, extra={"service_id": registration.id})
    keeper = asyncio.create_task(keep_registered(client, registration), name=f"{name}:consul")
    try:
        yield registration
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        try:
            async with asyncio.timeout(CONSUL_TIMEOUT_S + 1):
                await client.deregister(registration.id)
            log.info("deregistered from Consul", extra={"service_id": registration.id})
        except (ConsulUnavailable, TimeoutError) as exc:
            log.warning(
                "could not deregister from Consul (%s); it drops %s after %s of failing checks",
                exc,
                registration.id,
                DEREGISTER_CRITICAL_AFTER,
            )


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
