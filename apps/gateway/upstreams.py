"""Where each route goes: the routing table, and the instances of each service.

StaticUpstreams: one address per service (MSARCH_<SERVICE>_PORT on MSARCH_HOST,
or MSARCH_<SERVICE>_URL). ConsulUpstreams: the instances Consul lists as
healthy, re-read every MSARCH_DISCOVERY_INTERVAL_S (like Ocelot's PollConsul).
Both rotate round-robin and keep a circuit breaker per instance.
"""

import asyncio
import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from apps.gateway.breaker import CircuitBreaker, State
from msarch.discovery import ConsulClient, ConsulUnavailable
from msarch.settings import SERVICES, Settings

log = logging.getLogger("msarch.gateway")

BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_S = 5.0


@dataclass(frozen=True)
class Route:
    prefix: str
    service: str
    timeout_s: float


def routes_of(settings: Settings) -> list[Route]:
    """Longest prefix first. A batch may legitimately take a while: its route waits longer."""
    return [
        Route("/api/roundtrip", "roundtrip", 10.0),
        Route("/api/batch", "batch", settings.batch_timeout_s + settings.upstream_timeout_s),
        Route("/api/events", "websocket", 10.0),
    ]


class Upstreams:
    """The instances of each service, in the order to try them, and what the gateway saw of each."""

    def __init__(self) -> None:
        self._turns: defaultdict[str, Iterator[int]] = defaultdict(itertools.count)
        self._breakers: dict[str, CircuitBreaker] = {}

    def instances(self, service: str) -> list[str]:
        """The base URLs of the instances believed healthy."""
        raise NotImplementedError

    def candidates(self, service: str) -> list[str]:
        """The instances not marked down, the next one in round-robin order first."""
        urls = [u for u in self.instances(service) if self._breaker(u).state is not State.OPEN]
        if not urls:
            return []
        start = next(self._turns[service]) % len(urls)
        return urls[start:] + urls[:start]

    def allows(self, url: str) -> bool:
        return self._breaker(url).allow()

    def succeeded(self, url: str) -> None:
        self._breaker(url).success()

    def failed(self, url: str, reason: str) -> None:
        breaker = self._breaker(url)
        was = breaker.state
        breaker.failure()
        if breaker.state is State.OPEN and was is not State.OPEN:
            log.warning(
                "upstream marked down for %g s: %s",
                breaker.cooldown_s,
                reason,
                extra={"upstream_url": url},
            )

    def retry_after_s(self, service: str) -> int:
        """When to come back if no instance of `service` can be tried now."""
        waits = [self._breaker(u).retry_after_s() for u in self.instances(service)]
        return max(1, math.ceil(min(waits, default=2.0)))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def _breaker(self, url: str) -> CircuitBreaker:
        if url not in self._breakers:
            self._breakers[url] = CircuitBreaker(BREAKER_THRESHOLD, BREAKER_COOLDOWN_S)
        return self._breakers[url]

    def _forget_all_but(self, urls: set[str]) -> None:
        for url in self._breakers.keys() - urls:
            del self._breakers[url]


class StaticUpstreams(Upstreams):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings

    def instances(self, service: str) -> list[str]:
        return [self.settings.url_of(service)]


class ConsulUpstreams(Upstreams):
    """Healthy instances from Consul; while Consul cannot be reached, the last list is kept."""

    def __init__(self, client: ConsulClient, services: Sequence[str], interval_s: float) -> None:
        super().__init__()
        self.client = client
        self.services = tuple(services)
        self.interval_s = interval_s
        self._known: dict[str, list[str]] = {}
        self._consul_down = False
        self._poller: asyncio.Task[None] | None = None

    def instances(self, service: str) -> list[str]:
        return self._known.get(service, [])

    def retry_after_s(self, service: str) -> int:
        if not self.instances(service):
            return max(1, math.ceil(self.interval_s))
        return super().retry_after_s(service)

    async def refresh(self) -> None:
        try:
            for service in self.services:
                self._known[service] = [i.url for i in await self.client.healthy(service)]
        except ConsulUnavailable as exc:
            if not self._consul_down:
                log.warning("%s; routing to the instances it last listed", exc)
            self._consul_down = True
            return
        if self._consul_down:
            log.info("Consul answers again", extra={"consul": self.client.url})
        self._consul_down = False
        self._forget_all_but({url for urls in self._known.values() for url in urls})

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh()

    async def __aenter__(self) -> Self:
        await self.refresh()
        self._poller = asyncio.create_task(self._poll(), name="gateway:discovery")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)


def upstreams_of(settings: Settings) -> Upstreams:
    """Consul when MSARCH_CONSUL_URL is set, the static addresses otherwise."""
    if not settings.consul_url:
        return StaticUpstreams(settings)
    services = [s for s in SERVICES if s != "gateway"]
    return ConsulUpstreams(
        ConsulClient(settings.consul_url), services, settings.discovery_interval_s
    )
