"""Batch timeouts: a batch with no new item for MSARCH_ASSEMBLY_TIMEOUT_S is failed and reported.

Any store instance may sweep: failing a batch is atomic and happens once, so
only the instance whose call made it TimeoutExceeded replies.
"""

import asyncio
import logging
from functools import partial

from msarch import channels
from msarch.messages import BatchReply, BatchStatus
from msarch.resilience import until_redis_answers
from msarch.service import Runtime

log = logging.getLogger("msarch.store.timeouts")

SWEEP_INTERVAL_S = 1.0


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
                # Retried here, not at the next sweep: a write the replicas did not confirm
                # took the batch out of `assembling`, so no later sweep would reply for it.
                fail = partial(store.fail_batch, batch_id, BatchStatus.TimeoutExceeded, detail)
                status = await until_redis_answers(fail, runtime)
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
