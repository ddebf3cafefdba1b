"""Rate limits per client and route, shared by every gateway instance through Redis.

A client is the API key it sends (hashed: the key itself is never stored), else its address.
Each request takes one unit of the route's budget in one Redis script (GCRA: a budget of N per
period, refilled evenly, a burst of up to N), on Redis's clock, so a second gateway instance
does not double a client's budget and a restart does not reset it.

Answers carry the IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers):
`RateLimit-Policy: "api-roundtrip";q=100;w=60` and `RateLimit: "api-roundtrip";r=41;t=36`
(remaining, seconds until the budget is whole); a refusal is 429 problem+json with Retry-After.

If Redis cannot be asked, requests go through (said once in the log, and once when it answers
again): an edge that refuses everything while its limiter is down would be an outage of its own.
"""

import logging
import math
from dataclasses import dataclass

from redis.exceptions import RedisError

from apps.gateway.config import RateLimit, Route
from msarch.storage import Store, scripts

log = logging.getLogger("msarch.gateway")


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    policy: str
    limit: RateLimit
    remaining: int
    reset_s: int
    """Seconds until the client's budget is whole again."""
    retry_after_s: int
    """Seconds until one more request is allowed (0 when this one was)."""

    def headers(self) -> dict[str, str]:
        window = math.ceil(self.limit.period_s)
        headers = {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit.requests};w={window}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset_s}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.retry_after_s))
        return headers


def policy_name(route: Route) -> str:
    return route.prefix.strip("/").replace("/", "-")


class RateLimiter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._script = scripts.register(store.redis, "rate_limit", store.service)
        self._redis_down = False

    async def take(self, route: Route, client: str) -> Verdict | None:
        """One request of `client` on `route`: the verdict, or None when the route has no limit
        or Redis cannot be asked (the request then goes through)."""
        limit = route.rate_limit
        if limit is None:
            return None
        name = policy_name(route)
        key = self.store.keys.rate_limit(name, client)
        try:
            allowed, remaining, reset_ms, retry_ms = await self._script(
                [key], [limit.requests, round(limit.period_s * 1000)]
            )
        except RedisError as exc:
            if not self._redis_down:
                log.warning("rate limits not enforced: Redis cannot be asked (%s)", exc)
            self._redis_down = True
            return None
        if self._redis_down:
            log.info("rate limits enforced again: Redis answers")
            self._redis_down = False
        return Verdict(
            allowed=bool(allowed),
            policy=name,
            limit=limit,
            remaining=int(remaining),
            reset_s=math.ceil(int(reset_ms) / 1000),
            retry_after_s=math.ceil(int(retry_ms) / 1000),
        )

    async def close(self) -> None:
        await self.store.close()
