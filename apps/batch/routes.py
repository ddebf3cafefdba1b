"""The batch API: create a batch and wait for its outcome; list and read stored batches."""

from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from apps.batch.coordinator import BatchCoordinator, BatchNotPublished, StoppedWaiting
from apps.batch.deps import WaitersDep
from msarch.messages import BatchStatus
from msarch.observability import TIMEOUT_HEADER
from msarch.problems import Problem
from msarch.service import RuntimeDep
from msarch.settings import Settings

router = APIRouter(prefix="/api/batch", tags=["batch"])

MAX_OFFSET = 2**53
"""Offsets beyond this are 422: Redis takes 64-bit indexes, and no listing is that long."""


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: StrictInt | None = Field(default=None, description="items; default MSARCH_BATCH_SIZE")


class BatchDone(BaseModel):
    batch_id: UUID
    status: BatchStatus
    size: int
    elapsed_ms: float


class BatchInfo(BaseModel):
    batch_id: UUID
    status: BatchStatus
    size: int | None
    stored: int
    detail: str | None = None


def _size_of(body: BatchRequest | None, settings: Settings) -> int:
    size = body.size if body and body.size is not None else settings.batch_size
    if not 1 <= size <= settings.batch_max:
        raise Problem(
            422, "Invalid input", f"size must be between 1 and {settings.batch_max}, not {size}"
        )
    return size


@router.post("", summary="Create a batch of N items and wait until it is stored")
async def create_batch(
    runtime: RuntimeDep,
    waiters: WaitersDep,
    body: Annotated[BatchRequest | None, Body()] = None,
    caller_waits_ms: Annotated[
        int | None,
        Header(
            alias=TIMEOUT_HEADER,
            ge=1,
            description="how long the caller waits (the gateway sets it): a batch not Done by "
            "then is answered TimeoutExceeded in time, publishing included",
        ),
    ] = None,
) -> BatchDone:
    size = _size_of(body, runtime.settings)
    caller_waits_s = None if caller_waits_ms is None else caller_waits_ms / 1000
    try:
        outcome = await BatchCoordinator(runtime, waiters).create(size, caller_waits_s)
    except (BatchNotPublished, StoppedWaiting) as exc:
        raise Problem(
            503,
            "Service Unavailable",
            str(exc),
            headers={"Retry-After": "2"},
            batch_id=str(exc.batch_id),
        ) from exc
    if outcome.status is not BatchStatus.Done:
        raise Problem(
            400,
            outcome.status.value,
            outcome.detail or outcome.status.value,
            batch_id=str(outcome.batch_id),
            batch_status=outcome.status.value,
            elapsed_ms=outcome.elapsed_ms,
        )
    return BatchDone(
        batch_id=outcome.batch_id,
        status=outcome.status,
        size=outcome.size,
        elapsed_ms=outcome.elapsed_ms,
    )


@router.get("/batchkeys", summary="Stored batch ids, newest first")
async def batch_keys(
    runtime: RuntimeDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[str]:
    return await runtime.store.list_batches(offset, limit)


@router.get("/batchvalues/{batch_id}", summary="The key/values of a stored batch, in item order")
async def batch_values(
    batch_id: UUID,
    runtime: RuntimeDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int | None, Query(ge=1, le=MAX_OFFSET)] = None,
) -> StreamingResponse:
    if await runtime.store.batch_size(batch_id) is None:
        raise Problem(404, "Not Found", f"no stored batch {batch_id}")

    async def stream() -> AsyncIterator[bytes]:
        yield b"["
        first = True
        async for key, value in runtime.store.iter_batch_values(batch_id, offset, limit):
            item = _KeyValueOut(key=key, value=value).model_dump_json().encode()
            yield item if first else b"," + item
            first = False
        yield b"]"

    return StreamingResponse(stream(), media_type="application/json")


class _KeyValueOut(BaseModel):
    key: str
    value: str


@router.get("/{batch_id}", summary="The durable status of a batch, finished or not")
async def batch_info(batch_id: UUID, runtime: RuntimeDep) -> BatchInfo:
    state = await runtime.store.batch_state(batch_id)
    if state is None:
        raise Problem(404, "Not Found", f"no batch {batch_id}")
    return BatchInfo(
        batch_id=batch_id,
        status=state.status,
        size=state.size,
        stored=state.stored,
        detail=state.detail,
    )
