"""Write coalescing: batch items that arrive together are staged in one Lua call per batch.

Handlers run concurrently (up to the prefetch); each hands its item to the
buffer and waits. One flusher writes whatever has accumulated, one Lua call
per batch, all of them at once, then releases the handlers, which ack. The
batch rules themselves are msarch.batch_rules, applied in Redis.

Tracing follows the groups: each Lua call is one span ("batch stage", its script a child) in
the trace of the batch, whose items all carry the same traceparent; an item is not a span.
"""

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from uuid import UUID

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from msarch import channels, tracing
from msarch.messages import BatchItem, BatchReply
from msarch.observability import request_id
from msarch.resilience import until_broker_confirms, until_redis_answers
from msarch.service import Runtime
from msarch.storage import StageResult

log = logging.getLogger("msarch.store.stage_buffer")

MAX_FLUSH = 2000


@dataclass
class _Pending:
    item: BatchItem
    correlation_id: str | None
    traceparent: str | None
    done: "asyncio.Future[None]"


class StageBuffer:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    async def add(
        self, item: BatchItem, correlation_id: str | None, traceparent: str | None = None
    ) -> None:
        """Stage one item; returns once it is in Redis (and the batch replied, if it completed)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(item, correlation_id, traceparent, done))
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
        # Each group runs in a task of its own (gather): its request id and trace stay in it.
        request_id.set(group[0].correlation_id)
        span = self._span(group)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self._stage(group)
        finally:
            otel_context.detach(token)
            span.end()

    def _span(self, group: list[_Pending]) -> Span:
        """The group's span, in the trace its batch's items came with (non-recording when that
        trace is not sampled, or there is none)."""
        first = group[0]
        parent = tracing.context_from({tracing.TRACEPARENT: first.traceparent})
        if parent is None:
            return trace.INVALID_SPAN
        span = self.runtime.bus.tracer.start_span("batch stage", context=parent)
        if span.is_recording():
            span.set_attributes(
                {
                    "msarch.batch_id": str(first.item.batch_id),
                    "msarch.items": len(group),
                    "msarch.instance": self.runtime.bus.instance,
                }
            )
        return span

    async def _stage(self, group: list[_Pending]) -> None:
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
        if result.outcome.made_final:
            log.info(
                "batch %s",
                result.status.value,
                extra={"batch_id": str(batch_id), "stored": result.stored},
            )
        reply = BatchReply(batch_id=batch_id, status=result.status, detail=result.detail)
        await until_broker_confirms(
            lambda: self.runtime.bus.publish(
                channels.BATCH_REPLY,
                reply,
                message_id=f"{batch_id}:{result.status.value}",
                correlation_id=correlation_id,
            ),
            self.runtime.settings.publish_retry_s,
        )
