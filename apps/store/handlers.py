"""The store: consumes `event` and `batch`, writes Redis, publishes onward (MESSAGING).

Each message is acked only after its Redis write (and, for `event`, the
forward publish) succeeded; a Redis outage holds messages, it does not drop
or loop them.
"""

import logging

from apps.store.staging import ItemStager
from msarch import channels
from msarch.bus import EVENT_ID_HEADER
from msarch.bus.batches import Outcome, Received
from msarch.messages import KeyValue
from msarch.observability import current_trace_id
from msarch.resilience import until_broker_confirms, until_redis_answers
from msarch.service import Messaging, Runtime
from msarch.storage import MessageState

log = logging.getLogger("msarch.store")


def subscribe(runtime: Runtime) -> None:
    bus, store = runtime.bus, runtime.store
    stager = ItemStager(runtime)

    @bus.subscriber(channels.EVENT)
    async def on_event(kv: KeyValue) -> None:
        correlation_id, trace_id = bus.current_message().correlation_id, current_trace_id()
        state, event_id = await until_redis_answers(
            lambda: store.store_key_value(kv, correlation_id, trace_id), runtime
        )
        if state is MessageState.FORWARDED:
            log.debug("duplicate, already forwarded", extra={"message_id": str(kv.id)})
            return
        # A crash between the write and this publish re-forwards on redelivery, same event id.
        await until_broker_confirms(
            lambda: bus.publish(
                channels.FORWARD_ROUNDTRIP,
                kv,
                message_id=str(kv.id),
                correlation_id=correlation_id,
                headers={EVENT_ID_HEADER: event_id},
            ),
            runtime.settings.publish_retry_s,
        )
        await until_redis_answers(lambda: store.mark_forwarded(kv), runtime)
        first_time = state is MessageState.NEW
        log.debug(
            "stored and forwarded" if first_time else "re-forwarded after redelivery",
            extra={"message_id": str(kv.id), "event_id": event_id, "key": kv.key[:64]},
        )

    # Items come many at once, and are traced by the group they are staged in (staging.py).
    @bus.batch_subscriber(channels.BATCH)
    async def on_batch_items(received: list[Received]) -> list[Outcome]:
        return await stager.stage(received)


MESSAGING = Messaging(
    "store",
    publishes=(channels.FORWARD_ROUNDTRIP, channels.BATCH_REPLY),
    subscribe=subscribe,
)
