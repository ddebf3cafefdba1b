"""Staging batch items: the items a batch handler call got, one Lua call per batch among them.

The bus hands over the items that arrived together (a NATS fetch, or the RabbitMQ deliveries
handled concurrently: msarch.bus.batches); they are grouped by batch and each group staged in
one Lua call, all groups at once, and each item's outcome goes back to the bus, which acks it.
The batch rules themselves are msarch.batch_rules, applied in Redis.

Tracing follows the groups: each Lua call is one span ("batch stage", its script a child) in
the trace of the batch, whose items all carry the same traceparent; an item is not a span.
"""

import asyncio
import logging
from collections import defaultdict
from typing import cast
from uuid import UUID

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from msarch import channels, tracing
from msarch.bus.batches import Outcome, Received
from msarch.messages import BatchItem, BatchReply
from msarch.observability import request_id
from msarch.resilience import until_broker_confirms, until_redis_answers
from msarch.service import Runtime
from msarch.storage import StageResult

log = logging.getLogger("msarch.store.staging")


class ItemStager:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def stage(self, received: list[Received]) -> list[Outcome]:
        """Each item staged (and its batch replied to, if it completed), or why not."""
        groups: dict[tuple[UUID, int], list[int]] = defaultdict(list)
        for position, one in enumerate(received):
            item = cast("BatchItem", one.body)
            groups[(item.batch_id, item.size)].append(position)
        errors = await asyncio.gather(
            *(self._stage_group([received[p] for p in group]) for group in groups.values())
        )
        outcomes: list[Outcome] = [None] * len(received)
        for group, error in zip(groups.values(), errors, strict=True):
            for position in group:
                outcomes[position] = error
        return outcomes

    async def _stage_group(self, group: list[Received]) -> Outcome:
        """One batch's items staged in one Lua call; None, or the error that failed them."""
        # Each group runs in a task of its own (gather): its request id and trace stay in it.
        correlation_id = group[0].correlation_id
        items = [cast("BatchItem", one.body) for one in group]
        request_id.set(correlation_id)
        span = self._span(group[0], items)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self._stage(items, correlation_id)
        except Exception as exc:
            return exc
        finally:
            otel_context.detach(token)
            span.end()
        return None

    def _span(self, first: Received, items: list[BatchItem]) -> Span:
        """The group's span, in the trace its batch's items came with (non-recording when that
        trace is not sampled, or there is none)."""
        parent = tracing.context_from({tracing.TRACEPARENT: first.traceparent})
        if parent is None:
            return trace.INVALID_SPAN
        span = self.runtime.bus.tracer.start_span("batch stage", context=parent)
        if span.is_recording():
            span.set_attributes(
                {
                    "msarch.batch_id": str(items[0].batch_id),
                    "msarch.items": len(items),
                    "msarch.instance": self.runtime.bus.instance,
                }
            )
        return span

    async def _stage(self, items: list[BatchItem], correlation_id: str | None) -> None:
        result = await until_redis_answers(
            lambda: self.runtime.store.stage_items(items, correlation_id), self.runtime
        )
        if result.status.is_final:
            await self._reply(items[0].batch_id, result, correlation_id)

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
