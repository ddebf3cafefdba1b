"""The batch API over ASGI, without the lifespan.

Input checks run on the app as imported; the reads run on an app of the test's
own (Redis db 9, the test's namespace). The whole create-a-batch flow runs in
memory: the batch and store brokers on one TestRabbitBroker, the real handlers
of both services, and the real Redis. `Bus.publish_stream` talks to aio-pika
directly and is not patched by TestRabbitBroker, so it is replaced here by a
plain loop over `Bus.publish`, which is.
"""

import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi import FastAPI
from faststream.rabbit import TestRabbitBroker
from pydantic import BaseModel

from apps.batch.app import app as batch_app
from apps.batch.handlers import MESSAGING as BATCH_MESSAGING
from apps.batch.routes import router
from apps.store.handlers import subscribe as store_subscribe
from msarch.bus import PublishError
from msarch.channels import Channel
from msarch.events import EventType
from msarch.limits import DEFAULT_MAX_BODY
from msarch.messages import BatchItem, BatchStatus, item_of
from msarch.problems import PROBLEM_JSON
from msarch.service import Runtime, create_service
from msarch.settings import Settings
from msarch.storage import Store
from tests.utils.fixture_api import RuntimeFactory

URL = "/api/batch"


def _problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    return body


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://batch")


# -- input checks, on the app as imported ------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with _client(batch_app) as value:
        yield value


@pytest.mark.parametrize(
    "size",
    ["5", 2.5, True, [5], {"n": 5}],
    ids=["string", "float", "bool", "list", "object"],
)
async def test_a_size_that_is_not_an_integer_is_422(
    client: httpx.AsyncClient, size: object
) -> None:
    problem = _problem(await client.post(URL, json={"size": size}), 422)
    assert problem["title"] == "Invalid input"
    assert ["body", "size"] in [error["loc"] for error in problem["errors"]]


@pytest.mark.parametrize(
    "body", [b"{size: 5}", b'{"size": 5', b"[5]"], ids=["garbage", "truncated", "array"]
)
async def test_a_body_that_is_not_json_is_422(client: httpx.AsyncClient, body: bytes) -> None:
    answer = await client.post(URL, content=body, headers={"content-type": "application/json"})
    assert _problem(answer, 422)["title"] == "Invalid input"


async def test_an_unknown_field_is_422(client: httpx.AsyncClient) -> None:
    problem = _problem(await client.post(URL, json={"size": 5, "sise": 5}), 422)
    assert ["body", "sise"] in [error["loc"] for error in problem["errors"]]


async def test_a_body_over_512_kib_is_413(client: httpx.AsyncClient) -> None:
    body = json.dumps({"size": 5, "pad": "x" * DEFAULT_MAX_BODY}).encode()
    answer = await client.post(URL, content=body, headers={"content-type": "application/json"})
    assert _problem(answer, 413)["title"] == "Payload Too Large"


# -- the app of the test: size bounds, reads, and the whole flow --------------------------------


@dataclass
class BatchService:
    client: httpx.AsyncClient
    runtime: Runtime
    store: Store


@pytest.fixture
def batch_settings(unit_settings: Settings) -> Settings:
    return unit_settings.model_copy(
        update={"batch_size": 4, "batch_max": 1_000_000, "batch_timeout_s": 5.0}
    )


@pytest.fixture
async def service(batch_settings: Settings, store: Store) -> AsyncIterator[BatchService]:
    app = create_service(BATCH_MESSAGING, routers=[router], settings=batch_settings)
    runtime: Runtime = app.state.runtime
    try:
        async with _client(app) as client:
            yield BatchService(client, runtime, store)
    finally:
        await runtime.store.close()


@pytest.mark.parametrize("size", [0, -1, 1_000_001, 10**30])
async def test_a_size_out_of_bounds_is_422_and_nothing_is_created(
    service: BatchService, size: int
) -> None:
    problem = _problem(await service.client.post(URL, json={"size": size}), 422)
    assert problem["title"] == "Invalid input"
    assert problem["detail"] == f"size must be between 1 and 1000000, not {size}"
    assert await service.store.read_events() == []


async def test_an_unknown_batch_is_404(service: BatchService) -> None:
    unknown = uuid4()
    assert _problem(await service.client.get(f"{URL}/{unknown}"), 404)["detail"] == (
        f"no batch {unknown}"
    )
    _problem(await service.client.get(f"{URL}/batchvalues/{unknown}"), 404)


@pytest.mark.parametrize("path", [f"{URL}/not-a-uuid", f"{URL}/batchvalues/42"])
async def test_a_batch_id_that_is_not_a_uuid_is_422(service: BatchService, path: str) -> None:
    _problem(await service.client.get(path), 422)


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "all"}]
)
async def test_bad_paging_is_422(service: BatchService, params: dict[str, Any]) -> None:
    _problem(await service.client.get(f"{URL}/batchkeys", params=params), 422)


async def test_stored_batches_can_be_listed_and_read(service: BatchService) -> None:
    store = service.store
    ids = [uuid4() for _ in range(3)]
    for score, batch_id in enumerate(ids):
        await store.stage_items([item_of(batch_id, i, 3) for i in range(3)])
        await store.redis.zadd(store.keys.batches, {str(batch_id): 1000 + score})
    pending = uuid4()
    await store.stage_items([item_of(pending, 0, 2)])

    keys = await service.client.get(f"{URL}/batchkeys")
    assert keys.json() == [str(b) for b in reversed(ids)]
    assert (await service.client.get(f"{URL}/batchkeys", params={"limit": 1})).json() == [
        str(ids[-1])
    ]

    values = await service.client.get(f"{URL}/batchvalues/{ids[0]}")
    assert values.headers["content-type"] == "application/json"
    assert values.json() == [
        {"key": f"{ids[0]}_key_{i}", "value": f"{ids[0]}_value_{i}"} for i in range(3)
    ]
    window = await service.client.get(
        f"{URL}/batchvalues/{ids[0]}", params={"offset": 1, "limit": 1}
    )
    assert window.json() == [{"key": f"{ids[0]}_key_1", "value": f"{ids[0]}_value_1"}]

    info = (await service.client.get(f"{URL}/{pending}")).json()
    assert info == {
        "batch_id": str(pending),
        "status": "PendingDatabase",
        "size": 2,
        "stored": 1,
        "detail": None,
    }
    _problem(await service.client.get(f"{URL}/batchvalues/{pending}"), 404)


# -- the whole flow, in memory ------------------------------------------------------------


Drop = Callable[[BatchItem], bool]


@pytest.fixture
async def flow(
    service: BatchService, make_runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[Drop], None]]:
    """The batch and store services' brokers on one TestRabbitBroker; items lost on demand."""
    store_runtime = make_runtime("store")
    store_subscribe(store_runtime)
    bus = service.runtime.bus
    lose: list[Drop] = [lambda _: False]

    async def publish_one_by_one(
        channel: Channel,
        messages: Iterable[tuple[str, BaseModel]],
        *,
        correlation_id: str | None = None,
        retry_for_s: float | None = None,
    ) -> int:
        confirmed = 0
        for message_id, message in messages:
            assert isinstance(message, BatchItem)
            if not lose[0](message):
                await bus.publish(
                    channel, message, message_id=message_id, correlation_id=correlation_id
                )
            confirmed += 1
        return confirmed

    monkeypatch.setattr(bus, "publish_stream", publish_one_by_one)
    async with TestRabbitBroker(bus.broker, store_runtime.bus.broker):
        yield lambda drop: lose.__setitem__(0, drop)


async def test_a_batch_is_created_stored_and_answered_done(
    service: BatchService, flow: Callable[[Drop], None]
) -> None:
    answer = await service.client.post(URL, json={"size": 7}, headers={"x-request-id": "r-1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["size"]) == ("Done", 7)
    batch_id = body["batch_id"]

    values = (await service.client.get(f"{URL}/batchvalues/{batch_id}")).json()
    assert values == [
        {"key": f"{batch_id}_key_{i}", "value": f"{batch_id}_value_{i}"} for i in range(7)
    ]
    assert (await service.client.get(f"{URL}/batchkeys")).json() == [batch_id]
    info = (await service.client.get(f"{URL}/{batch_id}")).json()
    assert (info["status"], info["stored"]) == ("Done", 7)
    events = await service.store.read_events(limit=100)
    assert events[0].type is EventType.BatchRequested
    assert events[-1].type is EventType.BatchCommitted
    assert {e.correlation_id for e in events} == {"r-1"}


async def test_no_body_means_the_default_size(
    service: BatchService, flow: Callable[[Drop], None]
) -> None:
    answer = await service.client.post(URL)
    assert answer.status_code == 200, answer.text
    assert answer.json()["size"] == service.runtime.settings.batch_size


async def test_a_batch_missing_an_item_times_out_with_a_400_problem(
    service: BatchService, flow: Callable[[Drop], None]
) -> None:
    service.runtime.settings = service.runtime.settings.model_copy(update={"batch_timeout_s": 0.2})
    flow(lambda item: item.index == 2)
    answer = await service.client.post(URL, json={"size": 3})
    problem = _problem(answer, 400)
    assert problem["title"] == problem["batch_status"] == "TimeoutExceeded"
    assert problem["detail"] == "no reply within 0.2 s"
    state = await service.store.batch_state(UUID(problem["batch_id"]))
    assert state is not None
    assert (state.status, state.stored) == (BatchStatus.TimeoutExceeded, 0)


async def test_a_batch_the_broker_refuses_is_503_and_recorded_as_failed(
    service: BatchService, flow: Callable[[Drop], None]
) -> None:
    def refuse(item: BatchItem) -> bool:
        raise PublishError("batch: broker refused (simulated)")

    flow(refuse)
    answer = await service.client.post(URL, json={"size": 3})
    problem = _problem(answer, 503)
    assert answer.headers["retry-after"] == "2"
    info = (await service.client.get(f"{URL}/{problem['batch_id']}")).json()
    assert info["status"] == "DatabaseOperationFailed"
    assert "broker refused" in info["detail"]


async def test_a_batch_still_waiting_when_the_service_stops_is_503_and_goes_on(
    service: BatchService, flow: Callable[[Drop], None]
) -> None:
    flow(lambda item: item.index == 1)  # no reply can come: the request is still waiting
    service.runtime.stopping.set()
    problem = _problem(await service.client.post(URL, json={"size": 2}), 503)
    batch_id = problem["batch_id"]
    assert problem["detail"] == (
        f"the batch service is stopping; batch {batch_id} goes on: "
        f"GET /api/batch/{batch_id} gives its outcome"
    )
    info = (await service.client.get(f"{URL}/{batch_id}")).json()
    assert (info["status"], info["stored"]) == ("PendingDatabase", 1)
