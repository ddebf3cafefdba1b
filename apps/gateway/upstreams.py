"""The instances of each service, and what the gateway saw of each.

StaticUpstreams: one address per service (MSARCH_<SERVICE>_PORT on MSARCH_HOST,
or MSARCH_<SERVICE>_URL). ConsulUpstreams: the instances Consul lists as
healthy, re-read every MSARCH_DISCOVERY_INTERVAL_S (like Ocelot's PollConsul).
Both try the instances in the order each route's balancing says, and keep a circuit
breaker per route and instance.
"""

import asyncio
import itertools
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Self

from apps.gateway.breaker import CircuitBreaker, State
from apps.gateway.config import Balancing, Route
from msarch.discovery import ConsulClient, ConsulUnavailable
from msarch.settings import SERVICES, Settings

log = logging.getLogger("msarch.gateway")

BREAKER_THRESHOLD: int = Route.model_fields["breaker_threshold"].default
BREAKER_COOLDOWN_S: float = Route.model_fields["breaker_cooldown_s"].default
"""An instance's circuit breaker when no route says otherwise (the /health checks)."""


class Upstreams:
    """The instances of each service, in the order to try them, and what the gateway saw of
    each: a circuit breaker per route and instance (each route sets its own threshold), and
    the requests in flight to each instance."""

    def __init__(self) -> None:
        self._turns: defaultdict[str, Iterator[int]] = defaultdict(itertools.count)
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._outstanding: Counter[str] = Counter()

    def instances(self, service: str) -> list[str]:
        """The base URLs of the instances believed healthy."""
        raise NotImplementedError

    def discovery_state(self) -> str:
        """How the instances are found, for the live view: static, or Consul's state."""
        return "static"

    def candidates(self, service: str, route: Route | None = None) -> list[str]:
        """The instances not marked down, in the order the route's balancing tries them."""
        urls = [
            u for u in self.instances(service) if self._breaker(u, route).state is not State.OPEN
        ]
        if not urls:
            return []
        start = next(self._turns[service]) % len(urls)
        in_turn = urls[start:] + urls[:start]
        if route is not None and route.balancing is Balancing.least_outstanding:
            return sorted(in_turn, key=self._outstanding.__getitem__)  # stable: ties in turn
        return in_turn

    def allows(self, url: str, route: Route | None = None) -> bool:
        return self._breaker(url, route).allow()

    def succeeded(self, url: str, route: Route | None = None) -> None:
        self._breaker(url, route).success()

    def failed(self, url: str, reason: str, route: Route | None = None) -> None:
        breaker = self._breaker(url, route)
        was = breaker.state
        breaker.failure()
        if breaker.state is State.OPEN and was is not State.OPEN:
            log.warning(
                "upstream marked down for %g s: %s",
                breaker.cooldown_s,
                reason,
                extra={"upstream_url": url},
            )

    def started(self, url: str) -> None:
        """A request to `url` is in flight (least_outstanding counts them)."""
        self._outstanding[url] += 1

    def finished(self, url: str) -> None:
        self._outstanding[url] -= 1
        if self._outstanding[url] <= 0:
            del self._outstanding[url]

    def retry_after_s(self, service: str, route: Route | None = None) -> int:
        """When to come back if no instance of `service` can be tried now."""
        waits = [self._breaker(u, route).retry_after_s() for u in self.instances(service)]
        return max(1, math.ceil(min(waits, default=2.0)))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def _breaker(self, url: str, route: Route | None) -> CircuitBreaker:
        key = (route.prefix if route else "", url)
        if key not in self._breakers:
            self._breakers[key] = (
                CircuitBreaker(route.breaker_threshold, route.breaker_cooldown_s)
                if route
                else CircuitBreaker(BREAKER_THRESHOLD, BREAKER_COOLDOWN_S)
            )
        return self._breakers[key]

    def _forget_all_but(self, urls: set[str]) -> None:
        for key in [key for key in self._breakers if key[1] not in urls]:
            del self._breakers[key]


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

    def discovery_state(self) -> str:
        return "unreachable" if self._consul_down else "ok"

    def retry_after_s(self, service: str, route: Route | None = None) -> int:
        if not self.instances(service):
            return max(1, math.ceil(self.interval_s))
        return super().retry_after_s(service, route)

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
