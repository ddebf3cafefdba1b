"""Riding out an outage: hold the message and retry, never drop it, never spin.

A Redis outage includes replicas not confirming a write in time (NotReplicatedError, a
ConnectionError): the write is not acknowledged until they do. A broker that does not confirm
a handler's own publish (a stream or queue without a leader) is waited for too, for a while."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from prometheus_client import Counter
from redis.exceptions import BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from msarch.bus import PublishError
from msarch.bus.base import retried

T = TypeVar("T")
log = logging.getLogger("msarch.resilience")

REDIS_RETRIES = Counter(
    "msarch_redis_retries_total",
    "Redis calls retried because Redis was unreachable or its replicas did not confirm in time",
    ["service"],
)
_TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    # A primary demoted by a failover answers writes with READONLY until the client has asked
    # Sentinel again: the write is held and retried, like an outage, not failed.
    ReadOnlyError,
    ConnectionError,
    OSError,
)


class Named(Protocol):
    name: str


_OUTAGES: dict[str, float] = {}
"""Since when (monotonic) Redis has not answered a service of this process, by its name."""


def _outage_began(service: Named, exc: BaseException) -> None:
    if service.name not in _OUTAGES:
        _OUTAGES[service.name] = time.monotonic()
        log.warning(
            "Redis unavailable (%s: %s): holding messages and retrying", type(exc).__name__, exc
        )


def _outage_ended(service: Named) -> None:
    if (since := _OUTAGES.pop(service.name, None)) is not None:
        log.info("Redis answers again after %.1f s", time.monotonic() - since)


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
    The outage is logged once when it begins and once when it ends; each retry is DEBUG.
    """
    delay = first_delay_s
    retried = False
    while True:
        try:
            answer = await call()
        except _TRANSIENT as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # The client turned our cancellation into a connection error: stop all the same.
                raise asyncio.CancelledError from exc
            REDIS_RETRIES.labels(service.name).inc()
            _outage_began(service, exc)
            retried = True
            # Not %r: redis-py's repr of its errors leaves the message out.
            log.debug(
                "redis unavailable, retrying in %.2fs: %s: %s", delay, type(exc).__name__, exc
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)
            continue
        if retried:
            _outage_ended(service)
        return answer


async def until_broker_confirms(
    publish: Callable[[], Awaitable[None]],
    retry_for_s: float,
    *,
    first_delay_s: float = 0.2,
    max_delay_s: float = 2.0,
) -> None:
    """`publish` again, with capped backoff, while the broker does not confirm it, for up to
    `retry_for_s` (MSARCH_PUBLISH_RETRY_S) after the first failure; then its PublishError goes
    up, and the message being handled is nacked, one delivery spent.

    A handler's publish fails at once when its stream or queue has no leader (a NATS stream
    answers "no responders" in milliseconds): nacked straight away, a message would spend every
    delivery within one leader election and be dead-lettered, stored but never forwarded (seen
    in the NATS partition test: roundtrips in the log, never on a websocket)."""
    await retried(
        publish,
        retry_for_s,
        retry_on=(PublishError,),
        first_pause_s=first_delay_s,
        max_pause_s=max_delay_s,
    )
