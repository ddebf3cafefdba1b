"""The gateway's rate limit on the real Redis: the budget, its refill, the header fields, and
one budget for a client however many gateway instances (each its own connection) it meets."""

import asyncio

from apps.gateway.config import RateLimit, Route
from apps.gateway.rate_limit import RateLimiter
from msarch.settings import Settings
from msarch.storage import Store

ROUTE = Route(
    prefix="/api/roundtrip", service="roundtrip", rate_limit=RateLimit(requests=10, period_s=1.0)
)


async def test_a_burst_of_the_budget_passes_and_the_next_is_refused(store: Store) -> None:
    limiter = RateLimiter(store)
    verdicts = [await limiter.take(ROUTE, "addr:10.0.0.1") for _ in range(11)]
    assert all(v is not None for v in verdicts)
    assert [v.allowed for v in verdicts if v] == [True] * 10 + [False]
    assert [v.remaining for v in verdicts if v] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]
    refused = verdicts[-1]
    assert refused is not None
    assert refused.headers() == {
        "RateLimit-Policy": '"api-roundtrip";q=10;w=1',
        "RateLimit": '"api-roundtrip";r=0;t=1',
        "Retry-After": "1",
    }
    assert "Retry-After" not in verdicts[0].headers()  # type: ignore[union-attr]


async def test_the_budget_refills_evenly(store: Store) -> None:
    limiter = RateLimiter(store)
    for _ in range(10):
        await limiter.take(ROUTE, "addr:10.0.0.2")
    assert not (await limiter.take(ROUTE, "addr:10.0.0.2")).allowed  # type: ignore[union-attr]
    await asyncio.sleep(0.15)  # one interval (100 ms) and some: one more request
    again = [await limiter.take(ROUTE, "addr:10.0.0.2") for _ in range(2)]
    assert [v.allowed for v in again if v] == [True, False]


async def test_clients_and_routes_have_budgets_of_their_own(store: Store) -> None:
    limiter = RateLimiter(store)
    other_route = ROUTE.model_copy(update={"prefix": "/api/batch"})
    for _ in range(10):
        await limiter.take(ROUTE, "addr:10.0.0.3")
    assert not (await limiter.take(ROUTE, "addr:10.0.0.3")).allowed  # type: ignore[union-attr]
    assert (await limiter.take(ROUTE, "addr:10.0.0.4")).allowed  # type: ignore[union-attr]
    assert (await limiter.take(other_route, "addr:10.0.0.3")).allowed  # type: ignore[union-attr]


async def test_two_gateways_share_one_budget(store: Store, unit_settings: Settings) -> None:
    second = Store.from_url(unit_settings.redis_url, unit_settings.namespace)  # its own connection
    gateways = [RateLimiter(store), RateLimiter(second)]
    try:
        verdicts = await asyncio.gather(
            *(gateways[i % 2].take(ROUTE, "key:shared") for i in range(20))
        )
    finally:
        await second.close()
    assert sum(1 for v in verdicts if v and v.allowed) == 10


async def test_a_route_without_a_limit_is_not_asked(store: Store) -> None:
    assert await RateLimiter(store).take(Route(prefix="/a", service="batch"), "addr:x") is None
