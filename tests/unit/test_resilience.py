"""Riding out a Redis outage (msarch.resilience): retry what is transient, nothing else."""

import asyncio
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from msarch.resilience import until_redis_answers


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
