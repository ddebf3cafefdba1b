"""Riding out a Redis outage (msarch.resilience): retry what is transient, nothing else."""

import asyncio
import logging
import re
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import BusyLoadingError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from msarch.bus import PublishError
from msarch.resilience import until_broker_confirms, until_redis_answers


@dataclass
class Service:
    name: str = "unit-resilience"


def _retries() -> float:
    return REGISTRY.get_sample_value("msarch_redis_retries_total", {"service": Service.name}) or 0.0


@pytest.mark.parametrize(
    "error",
    [
        RedisConnectionError("refused"),
        RedisTimeoutError("slow"),
        BusyLoadingError("loading the dataset"),
        ReadOnlyError("READONLY You can't write against a read only replica."),
        ConnectionResetError("reset"),
    ],
    ids=type,
)
async def test_transient_errors_are_retried_until_redis_answers(error: Exception) -> None:
    failures = [error, error, error]
    before = _retries()

    async def call() -> str:
        if failures:
            raise failures.pop()
        return "answered"

    result = await until_redis_answers(call, Service(), first_delay_s=0.001, max_delay_s=0.002)
    assert result == "answered"
    assert _retries() - before == 3


async def test_other_errors_are_not_retried() -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise ResponseError("NOSCRIPT no matching script")

    with pytest.raises(ResponseError):
        await until_redis_answers(call, Service(), first_delay_s=0.001)
    assert calls == 1


async def test_the_wait_ends_on_cancellation() -> None:
    async def down() -> None:
        raise RedisConnectionError("down")

    waiting = asyncio.create_task(until_redis_answers(down, Service(), first_delay_s=0.001))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


@pytest.mark.timeout(10)  # without the check, the wait never ends
async def test_a_cancellation_the_client_turns_into_an_error_still_ends_the_wait() -> None:
    """redis-py can turn the CancelledError of a call in flight into a ConnectionError: the
    retry loop must not take that for an outage and go on for ever (a hang at shutdown)."""
    started = asyncio.Event()

    async def call() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None

    waiting = asyncio.create_task(until_redis_answers(call, Service(), first_delay_s=0.001))
    await started.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 2)


async def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Eight held messages retrying through a Redis outage: two lines, not one per retry."""
    service = Service(name="unit-resilience-outage")
    down = asyncio.Event()
    down.set()

    async def call() -> str:
        if down.is_set():
            raise RedisConnectionError("Connection refused")
        return "stored"

    with caplog.at_level(logging.INFO, logger="msarch.resilience"):
        held = [
            asyncio.create_task(until_redis_answers(call, service, first_delay_s=0.001))
            for _ in range(8)
        ]
        await asyncio.sleep(0.1)
        down.clear()
        assert await asyncio.gather(*held) == ["stored"] * 8
    assert [r.getMessage() for r in caplog.records] == [
        "Redis unavailable (ConnectionError: Connection refused): holding messages and retrying",
        caplog.records[1].getMessage(),
    ]
    assert re.fullmatch(r"Redis answers again after \d+\.\d s", caplog.records[1].getMessage())


class Refusals:
    """A publish the broker refuses `times` times (PublishError, as a leaderless stream does),
    then confirms; when each attempt was made."""

    def __init__(self, times: int) -> None:
        self.left = times
        self.attempts: list[float] = []

    async def __call__(self) -> None:
        self.attempts.append(asyncio.get_running_loop().time())
        if self.left:
            self.left -= 1
            raise PublishError("no responders")


async def test_a_publish_the_broker_refuses_is_sent_again_until_it_is_confirmed() -> None:
    publish = Refusals(times=3)
    await until_broker_confirms(publish, retry_for_s=5, first_delay_s=0.01)
    assert len(publish.attempts) == 4
    pauses = [b - a for a, b in zip(publish.attempts, publish.attempts[1:], strict=False)]
    assert pauses == sorted(pauses), "with a growing pause, not spinning"


async def test_a_publish_still_refused_after_the_retry_time_fails() -> None:
    publish = Refusals(times=1_000)
    with pytest.raises(PublishError):
        await until_broker_confirms(publish, retry_for_s=0.3, first_delay_s=0.05)
    assert 2 <= len(publish.attempts) <= 6
    assert publish.attempts[-1] - publish.attempts[0] <= 0.3


async def test_other_publish_errors_are_not_retried() -> None:
    attempts = 0

    async def broken() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("a bug, not the broker")

    with pytest.raises(ValueError, match="a bug"):
        await until_broker_confirms(broken, retry_for_s=5)
    assert attempts == 1
