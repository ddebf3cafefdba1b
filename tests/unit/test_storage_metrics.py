"""msarch_redis_script_seconds{service,script}: each Lua script call timed, under the service
the Store works for, on the real Redis; a script never called has no series."""

from uuid import uuid4

import pytest
from prometheus_client import REGISTRY

from msarch.messages import KeyValue
from msarch.storage import NotReplicatedError, Replication, Store


def calls(service: str, script: str) -> float | None:
    labels = {"service": service, "script": script}
    return REGISTRY.get_sample_value("msarch_redis_script_seconds_count", labels)


async def test_each_script_call_is_timed_under_the_service(store: Store) -> None:
    service = f"test-{uuid4().hex[:8]}"
    timed = Store(store.redis, store.namespace, service=service)
    await timed.store_key_value(KeyValue(key="k", value="v"))
    await timed.request_batch(uuid4(), 3)
    assert calls(service, "store_key_value") == 1
    assert calls(service, "request_batch") == 1
    assert calls(service, "stage_items") is None


async def test_a_write_that_waits_for_replicas_is_timed_with_its_wait(store: Store) -> None:
    """No replica answers the test Redis: the WAIT takes its whole timeout, and so does the
    timed call (NotReplicatedError after it)."""
    service = f"test-{uuid4().hex[:8]}"
    waiting = Store(store.redis, store.namespace, Replication(1, 200), service=service)
    with pytest.raises(NotReplicatedError):
        await waiting.store_key_value(KeyValue(key="k", value="v"))
    labels = {"service": service, "script": "store_key_value"}
    seconds = REGISTRY.get_sample_value("msarch_redis_script_seconds_sum", labels)
    assert calls(service, "store_key_value") == 1
    assert seconds is not None
    assert seconds >= 0.2
