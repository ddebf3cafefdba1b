"""Riding out a Redis outage: hold the message and retry, never drop it, never spin."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from prometheus_client import Counter
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")
log = logging.getLogger("msarch.resilience")

REDIS_RETRIES = Counter(
    "msarch_redis_retries_total", "Redis calls retried because Redis was unreachable", ["service"]
)
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ConnectionError, OSError)


class Named(Protocol):
    name: str


async def until_redis_answers(
    call: Callable[[], Awaitable[T]],
    service: Named,
    *,
    first_delay_s: float = 0.05,
    max_delay_s: float = 2.0,
) -> T:
    """Retry `call` with capped exponential backoff while Redis is unreachable.

    The message stays unacked meanwhile (prefetch bounds how many are held), so
    an outage delays work instead of losing it or burning it through redeliveries.
    Cancellation (shutdown) ends the wait; the unacked message is then redelivered.
    """
    delay = first_delay_s
    while True:
        try:
            return await call()
        except _TRANSIENT as exc:
            REDIS_RETRIES.labels(service.name).inc()
            log.warning("redis unreachable, retrying in %.2fs: %r", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
