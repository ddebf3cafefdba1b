"""compose.yaml's `nats` profile in containers: every service on NATS JetStream (fsync always).

One module of its own, with a stack of its own, so the RabbitMQ suite's stack is not shared.
"""

import time

import httpx
import pytest

from msarch.testing.stack import wait_for
from tests.utils.compose import ComposeStack
from tests.utils.figures import Figures

pytestmark = [pytest.mark.containers, pytest.mark.slow]


@pytest.mark.timeout(600)
async def test_roundtrip_and_batch_on_nats_in_containers(
    nats_compose_stack: ComposeStack, figures: Figures
) -> None:
    stack = nats_compose_stack
    async with httpx.AsyncClient(timeout=60) as client:
        health = (await client.get(f"{stack.gateway_url}/health")).json()
        accepted = await client.post(
            f"{stack.gateway_url}/api/roundtrip", json={"key": "on-nats", "value": "ü"}
        )
        started = time.monotonic()
        batch = await client.post(f"{stack.gateway_url}/api/batch", json={"size": 2000})
        batch_s = time.monotonic() - started
    store = await stack.store()
    try:
        batch_id = batch.json()["batch_id"]
        fields = await store.redis.hlen(store.keys.batch(batch_id))

        async def roundtrip_stored() -> bool:
            return await store.get_value("on-nats") == "ü"

        await wait_for(roundtrip_stored, 15)
        connections = await stack.docker(
            "exec", await stack.container("nats"), "wget", "-qO-", "http://127.0.0.1:8222/connz"
        )
    finally:
        await store.close()
    figures(stack_up_s=round(stack.up_s, 1), batch_size=2000, batch_s=round(batch_s, 2))
    assert all(upstream["broker"] == "ok" for upstream in health["upstreams"].values())
    assert accepted.status_code == 202, accepted.text
    assert batch.status_code == 200, batch.text
    assert batch.json()["status"] == "Done"
    assert fields == 2000
    assert '"num_connections": 4' in connections or '"num_connections":4' in connections, (
        "the four services with a broker are connected to the stack's own nats-server"
    )
