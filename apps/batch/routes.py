"""The batch API: create a batch and wait for its outcome; list and read stored batches."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Body, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from redis.exceptions import RedisError

from apps.batch.handlers import WAITERS
from msarch import channels
from msarch.bus import PublishError
from msarch.messages import BatchItem, BatchReply, BatchStatus, item_of
from msarch.observability import request_id
from msarch.problems import Problem
from msarch.service import Runtime, RuntimeDep

router = APIRouter(prefix="/api/batch", tags=["batch"])

KEEP_ALIVE_S = 1.0
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


def _items(batch_id: UUID, size: int) -> Iterator[tuple[str, BatchItem]]:
    for index in range(size):
        yield f"{batch_id}:{index}", item_of(batch_id, index, size)


@router.post("", summary="Create a batch of N items and wait until it is stored")
async def create_batch(
    runtime: RuntimeDep, body: Annotated[BatchRequest | None, Body()] = None
) -> BatchDone:
    settings = runtime.settings
    size = body.size if body and body.size is not None else settings.batch_size
    if not 1 <= size <= settings.batch_max:
        raise Problem(
            422, "Invalid input", f"size must be between 1 and {settings.batch_max}, not {size}"
        )
    batch_id = uuid4()
    started = time.perf_counter()
    reply_arrived = WAITERS.expect(batch_id)
    keep_alive = asyncio.create_task(_keep_assembling(runtime, batch_id))
    try:
        await runtime.store.request_batch(batch_id, size, request_id.get())
        await runtime.bus.publish_stream(
            channels.BATCH, _items(batch_id, size), correlation_id=request_id.get()
        )
        try:
            async with asyncio.timeout(settings.batch_timeout_s):
                reply = await _reply_unless_stopping(reply_arrived, runtime.stopping)
            if reply is None:
                raise Problem(
                    503,
                    "Service Unavailable",
                    f"the batch service is stopping; batch {batch_id} goes on: "
                    f"GET /api/batch/{batch_id} gives its outcome",
                    headers={"Retry-After": "2"},
                    batch_id=str(batch_id),
                )
            status, detail = reply.status, reply.detail
        except TimeoutError:
            # The reply may be lost, not the outcome: Redis has the durable status.
            status = await runtime.store.fail_batch(
                batch_id,
                BatchStatus.TimeoutExceeded,
                f"no reply within {settings.batch_timeout_s:g} s",
            )
            state = await runtime.store.batch_state(batch_id)
            detail = state.detail if state else None
    except PublishError as exc:
        await runtime.store.fail_batch(
            batch_id, BatchStatus.DatabaseOperationFailed, f"publishing failed: {exc}"
        )
        raise Problem(
            503,
            "Service Unavailable",
            f"the broker did not take the batch: {exc}",
            headers={"Retry-After": "2"},
            batch_id=str(batch_id),
        ) from exc
    finally:
        keep_alive.cancel()
        WAITERS.forget(batch_id)
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    if status is not BatchStatus.Done:
        raise Problem(
            400,
            status.value,
            detail or status.value,
            batch_id=str(batch_id),
            batch_status=status.value,
            elapsed_ms=elapsed_ms,
        )
    return BatchDone(batch_id=batch_id, status=status, size=size, elapsed_ms=elapsed_ms)


async def _reply_unless_stopping(
    reply: "asyncio.Future[BatchReply]", stopping: asyncio.Event
) -> BatchReply | None:
    """The batch's reply, or None if the service is told to stop first."""
    stop: asyncio.Future[Any] = asyncio.create_task(stopping.wait())
    either: set[asyncio.Future[Any]] = {reply, stop}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    return reply.result() if reply.done() else None


async def _keep_assembling(runtime: Runtime, batch_id: UUID) -> None:
    """While this request publishes and waits, its batch is not stalled, however long its
    items queue behind others; the store times out only a batch whose publisher is gone."""
    while True:
        with contextlib.suppress(RedisError):  # a missed beat is made up by the next one
            await runtime.store.keep_assembling(batch_id)
        await asyncio.sleep(KEEP_ALIVE_S)


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
