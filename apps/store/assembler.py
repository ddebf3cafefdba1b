"""Batch assembly in the store: staging writes coalesced into pipelines, and timeouts.

Handlers run concurrently (up to the prefetch); each hands its item to the
assembler and waits. One flusher writes whatever has accumulated, one Lua call
per batch, all of them in one pipeline, then releases the handlers, which ack.
"""

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from uuid import UUID

from msarch import channels
from msarch.messages import BatchItem, BatchReply, BatchStatus
from msarch.resilience import until_redis_answers
from msarch.service import Runtime
from msarch.storage import StageResult

log = logging.getLogger("msarch.store.assembler")

MAX_FLUSH = 2000
SWEEP_INTERVAL_S = 1.0


@dataclass
class _Pending:
    item: BatchItem
    correlation_id: str | None
    done: "asyncio.Future[None]"


class Assembler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    async def add(self, item: BatchItem, correlation_id: str | None) -> None:
        """Stage one item; returns once it is in Redis (and the batch replied, if it completed)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(item, correlation_id, done))
        self._wakeup.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever(), name="store:flusher")
        await done

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                chunk, self._pending = self._pending[:MAX_FLUSH], self._pending[MAX_FLUSH:]
                await self._flush(chunk)

    async def _flush(self, chunk: list[_Pending]) -> None:
        groups: dict[tuple[UUID, int], list[_Pending]] = defaultdict(list)
        for pending in chunk:
            groups[(pending.item.batch_id, pending.item.size)].append(pending)
        await asyncio.gather(*(self._flush_group(group) for group in groups.values()))

    async def _flush_group(self, group: list[_Pending]) -> None:
        items = [p.item for p in group]
        correlation_id = group[0].correlation_id
        try:
            result = await until_redis_answers(
                lambda: self.runtime.store.stage_items(items, correlation_id), self.runtime
            )
            if result.status.is_final:
                await self._reply(items[0].batch_id, result, correlation_id)
        except BaseException as exc:
            for p in group:
                if not p.done.done():
                    p.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for p in group:
            if not p.done.done():
                p.done.set_result(None)

    async def _reply(self, batch_id: UUID, result: StageResult, correlation_id: str | None) -> None:
        # A redelivered item of a finished batch replies again: the first reply may be lost.
        if result.outcome in ("completed", "invalidated"):
            log.info(
                "batch %s",
                result.status.value,
                extra={"batch_id": str(batch_id), "stored": result.stored},
            )
        await self.runtime.bus.publish(
            channels.BATCH_REPLY,
            BatchReply(batch_id=batch_id, status=result.status, detail=result.detail),
            message_id=f"{batch_id}:{result.status.value}",
            correlation_id=correlation_id,
        )


async def sweep_stalled_batches(runtime: Runtime) -> None:
    """Time out batches with no new item for MSARCH_ASSEMBLY_TIMEOUT_S, and report them."""
    timeout = runtime.settings.assembly_timeout_s
    store = runtime.store
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        try:
            for batch_id in await store.stalled_batches(timeout):
                state = await store.batch_state(batch_id)
                stored = state.stored if state else 0
                size = state.size if state else "?"
                detail = f"received {stored} of {size} items, then none for {timeout:g} s"
                status = await store.fail_batch(batch_id, BatchStatus.TimeoutExceeded, detail)
                if status is BatchStatus.TimeoutExceeded:
                    log.warning(
                        "batch timed out", extra={"batch_id": str(batch_id), "detail": detail}
                    )
                    await runtime.bus.publish(
                        channels.BATCH_REPLY,
                        BatchReply(batch_id=batch_id, status=status, detail=detail),
                        message_id=f"{batch_id}:{status.value}",
                    )
        except Exception:
            log.exception("sweeping stalled batches failed; will retry")
