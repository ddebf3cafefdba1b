"""MSARCH_REDIS_SENTINELS, _MASTER and _WAIT_REPLICAS as Settings reads them, and the client
Store.from_settings builds from them (nothing connects: no server is needed)."""

import pytest
from pydantic import ValidationError
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool

from msarch.settings import Settings
from msarch.storage import Replication, Store


@pytest.mark.parametrize(
    ("sentinels", "pairs"),
    [
        ("10.0.0.1:26380,10.0.0.2:26381", [("10.0.0.1", 26380), ("10.0.0.2", 26381)]),
        ("sentinel-1, sentinel-2:5000 ,", [("sentinel-1", 26379), ("sentinel-2", 5000)]),
        ("redis-sentinel", [("redis-sentinel", 26379)]),
        ("", []),
        (None, []),
    ],
)
def test_sentinels_are_host_port_pairs_26379_when_the_port_is_left_out(
    sentinels: str | None, pairs: list[tuple[str, int]]
) -> None:
    assert Settings(redis_sentinels=sentinels).sentinels == pairs


@pytest.mark.parametrize(
    ("sentinels", "wait_replicas", "expected"),
    [
        (None, None, 0),  # one Redis: nothing to wait for
        ("s1:26379,s2:26379", None, 1),  # behind Sentinel: the replica a failover promotes
        (None, 2, 2),
        ("s1:26379", 0, 0),  # said explicitly: acknowledged on the primary's word
        ("s1:26379", 2, 2),
    ],
)
def test_wait_replicas_is_one_behind_sentinel_unless_set(
    sentinels: str | None, wait_replicas: int | None, expected: int
) -> None:
    settings = Settings(redis_sentinels=sentinels, redis_wait_replicas=wait_replicas)
    assert settings.wait_replicas == expected


def test_the_environment_names_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSARCH_REDIS_SENTINELS", "a:1,b")
    monkeypatch.setenv("MSARCH_REDIS_MASTER", "primary")
    monkeypatch.setenv("MSARCH_REDIS_WAIT_REPLICAS", "2")
    monkeypatch.setenv("MSARCH_REDIS_WAIT_TIMEOUT_MS", "750")
    settings = Settings()
    assert (settings.sentinels, settings.redis_master) == ([("a", 1), ("b", 26379)], "primary")
    assert (settings.wait_replicas, settings.redis_wait_timeout_ms) == (2, 750)


def test_by_default_no_sentinel_and_mymaster() -> None:
    settings = Settings(redis_sentinels=None, redis_wait_replicas=None)
    assert (settings.sentinels, settings.wait_replicas) == ([], 0)
    assert settings.redis_master == "mymaster"


@pytest.mark.parametrize("field", ["redis_wait_replicas", "redis_wait_timeout_ms"])
def test_a_negative_wait_is_refused(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings.model_validate({field: -1})


async def test_from_settings_without_sentinels_uses_the_url() -> None:
    store = Store.from_settings(
        Settings(
            redis_url="redis://:pw@127.0.0.1:6399/3",
            redis_sentinels=None,
            redis_wait_replicas=None,
            namespace="test-x-",
        ),
        max_connections=7,
    )
    pool = store.redis.connection_pool
    assert isinstance(pool, BlockingConnectionPool)
    assert (pool.max_connections, store.namespace) == (7, "test-x-")
    assert store.replication == Replication(replicas=0)
    kwargs = pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"], kwargs["password"]) == (6399, 3, "pw")
    await store.close()


async def test_from_settings_with_sentinels_takes_only_db_and_password_from_the_url() -> None:
    settings = Settings(
        redis_url="redis://:pw@ignored-host:6399/5",
        redis_sentinels="127.0.0.1:1,127.0.0.1:2",
        redis_master="primary",
        redis_wait_replicas=None,
        redis_wait_timeout_ms=1500,
    )
    store = Store.from_settings(settings, max_connections=9, namespace="test-y-")
    pool = store.redis.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert (pool.service_name, pool.is_master, pool.max_connections) == ("primary", True, 9)
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["password"]) == (5, "pw")
    assert "host" not in kwargs, "Sentinel names the host"
    assert store.namespace == "test-y-"
    assert store.replication == Replication(replicas=1, timeout_ms=1500)
    # A WAIT may use its whole timeout: the socket waits longer than that.
    assert kwargs["socket_timeout"] > 1.5
    await store.close()
