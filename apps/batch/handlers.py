"""The batch service publishes `batch` and consumes `batch_reply`, waking the request that waits."""

from apps.batch.waiters import Waiters
from msarch import channels
from msarch.messages import BatchReply
from msarch.service import Messaging, Runtime


def subscribe(runtime: Runtime) -> None:
    waiters = runtime.dependency(Waiters)

    @runtime.bus.subscriber(channels.BATCH_REPLY)
    async def on_batch_reply(reply: BatchReply) -> None:
        waiters.resolve(reply)


MESSAGING = Messaging(
    "batch", publishes=(channels.BATCH,), subscribe=subscribe, dependencies=(Waiters,)
)
