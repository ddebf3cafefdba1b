"""The batch service consumes `batch_reply` and wakes the request that waits for it."""

from apps.batch.waiters import Waiters
from msarch import channels
from msarch.messages import BatchReply
from msarch.service import Runtime


def subscribe(runtime: Runtime) -> None:
    waiters = runtime.dependency(Waiters)

    @runtime.bus.subscriber(channels.BATCH_REPLY)
    async def on_batch_reply(reply: BatchReply) -> None:
        waiters.resolve(reply)
