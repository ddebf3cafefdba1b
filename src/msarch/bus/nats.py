"""NATS JetStream: file-backed streams, durable pull consumers for work, one consumer per
instance for broadcasts.

- `<ns>msarch-work` holds `event` and `batch` with work-queue retention: a
  message is gone once acked. One durable pull consumer per channel is shared by
  every instance (competing consumers), max_deliver bounds redelivery.
- `<ns>msarch-broadcast` holds `forward_roundtrip` and `batch_reply` for an
  hour; every instance reads it with a durable consumer of its own from "new" on,
  replicated like the stream, removed a minute after the instance is gone.
- `<ns>msarch-dead` holds `<channel>.dead` subjects, work-queue retention.
- Every publish waits for the stream's PubAck and carries Nats-Msg-Id, so a
  publish retried within the duplicate window is stored once.

A consumer that dies leaves its unacked messages to be redelivered after
`ack_wait` (a few seconds, well inside a batch's timeout); a live one keeps the
messages it is still working on (say, held through a Redis outage) claimed with
in-progress acks, so they are not redelivered meanwhile nor burn `max_deliver`.

On a JetStream cluster each stream has MSARCH_NATS_REPLICAS replicas (a PubAck then means a
majority of them hold the message) and the client moves between the servers listed in
MSARCH_BROKER_URL.

Durability: streams use file storage, but the server decides when it fsyncs
(`sync_interval`, 2 min by default). The embedded server that `msarch up`
starts runs with `sync_interval: always`; see README for a shared server.
"""

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from dataclasses import replace
from typing import Any

import nats.errors
from faststream import AckPolicy
from faststream.message import StreamMessage
from faststream.nats import JStream, NatsBroker, PullSub
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError
from nats.js.api import (
    AckPolicy as JsAckPolicy,
)
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError
from pydantic import BaseModel, ValidationError

from msarch import channels, tracing
from msarch.bus.base import (
    DEAD_SUFFIX,
    MESSAGE_ID_HEADER,
    REASON_HEADER,
    Bus,
    DeadLetter,
    ObjectKind,
    dead_letter_headers,
    public_urls,
    read_dead_letter,
)
from msarch.bus.batches import BatchHandler, Received, outcomes_of, undecoded
from msarch.bus.consume import counted, dead_lettered, failed_reason, invalid_reason
from msarch.channels import Channel, Delivery
from msarch.settings import Settings

log = logging.getLogger("msarch.bus.nats")


def _fetch_timing_out_as_nats(fetch: Callable[..., Awaitable[list[Msg]]]) -> Any:
    """nats-py 2.16's fetch times out with a plain TimeoutError when its no-wait probe used up
    the timeout, nats.errors.TimeoutError otherwise; FastStream 0.7.8's batch pull loop
    catches only the latter. The plain one ended the loop's task with the messages fetched so
    far for the batch neither handled nor acked: redelivered after ack_wait, one delivery
    spent each time (logged once a process, "Task-N raised an exception, retrying"). Every
    timeout is nats-py's own here, which is a TimeoutError all the same."""

    @functools.wraps(fetch)
    async def fetched(*args: Any, **kwargs: Any) -> list[Msg]:
        try:
            return await fetch(*args, **kwargs)
        except nats.errors.TimeoutError:
            raise
        except TimeoutError as exc:
            raise nats.errors.TimeoutError from exc

    fetched.times_out_as_nats = True  # type: ignore[attr-defined]
    return fetched


if not getattr(JetStreamContext.PullSubscription.fetch, "times_out_as_nats", False):
    JetStreamContext.PullSubscription.fetch = _fetch_timing_out_as_nats(  # type: ignore[method-assign]
        JetStreamContext.PullSubscription.fetch
    )

MSG_ID = "Nats-Msg-Id"
BROADCAST_MAX_AGE_S = 3600.0
DUPLICATE_WINDOW_S = 120.0
PUBACK_TIMEOUT_S = 5.0
"""How long publish_stream waits for one item's PubAck before sending it again."""
FILL_S = 0.05
"""How long a batch pull subscriber goes on fetching to fill its batch: FastStream hands the
handler what it has after that (or once it has MSARCH_PREFETCH). The handler's wait for the
last items of a short batch; idle, a fetch request every FILL_S."""
ACK_WAIT_S = 6.0
"""How soon the messages of a consumer that died are redelivered."""
INSTANCE_CONSUMER_EXPIRES_S = 60.0
"""How long an instance's broadcast consumer outlives the instance (RabbitMQ's instance queues
expire after as long)."""


class NatsBus(Bus[NatsBroker]):
    system = "nats"

    def __init__(self, settings: Settings, *, service: str) -> None:
        super().__init__(settings, service=service)
        self.broker = NatsBroker(
            settings.broker_urls,  # nats-py moves to another server of the list by itself
            max_reconnect_attempts=-1,  # keep trying: an outage delays, it does not kill
            reconnect_time_wait=1,
            # A server that stops answering (cut off) is left when a third ping goes out with
            # two unanswered: MSARCH_BROKER_HEARTBEAT_S after it went silent.
            ping_interval=max(1, round(settings.broker_heartbeat_s / 3)),
            max_outstanding_pings=2,
            specification_url=public_urls(settings.broker_urls),
            **self._broker_options(),
        )
        self.work = self._file_stream(
            "work",
            [self.name(c) for c in channels.ALL if c.delivery is Delivery.WORK],
            RetentionPolicy.WORK_QUEUE,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        self.broadcast = self._file_stream(
            "broadcast",
            [self.name(c) for c in channels.ALL if c.delivery is Delivery.BROADCAST],
            RetentionPolicy.LIMITS,
            max_age=BROADCAST_MAX_AGE_S,
            duplicate_window=DUPLICATE_WINDOW_S,
        )
        self.dead = self._file_stream(
            "dead", [self.name(c) + DEAD_SUFFIX for c in channels.ALL], RetentionPolicy.WORK_QUEUE
        )
        self._handling: dict[int, Any] = {}
        """The raw messages being handled, by id() (they are not hashable)."""
        self._keeper: asyncio.Task[None] | None = None

    def _file_stream(
        self,
        kind: str,
        subjects: list[str],
        retention: RetentionPolicy,
        *,
        max_age: float | None = None,
        duplicate_window: float = 0,
    ) -> JStream:
        """A file-backed stream, declared by connect() (so declare=False for FastStream)."""
        return JStream(
            # Stream names may not contain '.', '*', '>' or whitespace.
            f"{self.prefix}msarch-{kind}".replace(".", "_"),
            subjects=subjects,
            retention=retention,
            storage=StorageType.FILE,
            max_age=max_age,
            duplicate_window=duplicate_window,
            num_replicas=self.settings.nats_replicas,
            declare=False,
        )

    def _durable(self, channel: Channel, suffix: str = "") -> str:
        return f"{self.prefix}{channel.name}{suffix}".replace(".", "_")

    def _stream_of(self, channel: Channel) -> JStream:
        return self.work if channel.delivery is Delivery.WORK else self.broadcast

    # -- consuming ---------------------------------------------------------------

    def _subscription(self, channel: Channel) -> dict[str, Any]:
        if channel.delivery is Delivery.WORK:
            return {
                "subject": self.name(channel),
                "stream": self.work,
                "durable": self._durable(channel),
                # Each fetched batch is handled concurrently (the store coalesces it into
                # one Redis pipeline) and acked before the next fetch.
                "pull_sub": PullSub(batch_size=self.settings.prefetch, timeout=5.0),
                "config": ConsumerConfig(
                    ack_policy=JsAckPolicy.EXPLICIT,
                    ack_wait=ACK_WAIT_S,
                    max_deliver=self.settings.delivery_limit,
                    max_ack_pending=self.settings.prefetch * 4,
                ),
            }
        # Each instance's own consumer, durable and replicated like its stream: an ephemeral
        # one lives on one server, and a partition that cuts that server off from the instance
        # deleted it (its interest unseen for 5 s), after which the instance got no broadcast
        # again. It goes INSTANCE_CONSUMER_EXPIRES_S after the instance does.
        return {
            "subject": self.name(channel),
            "stream": self.broadcast,
            "durable": self._durable(channel, f"-{self.instance}"),
            "config": ConsumerConfig(
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=JsAckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT_S,
                inactive_threshold=INSTANCE_CONSUMER_EXPIRES_S,
                num_replicas=self.settings.nats_replicas,
            ),
        }

    def batch_subscriber(self, channel: Channel) -> Callable[[BatchHandler], BatchHandler]:
        """What the pull consumer fetched (up to MSARCH_PREFETCH messages), handed to the
        handler in one call: FastStream's batch pull subscriber, the consume path paid once a
        fetch. Each message is then acked, nacked or dead-lettered by its own outcome."""
        payload = channel.payload

        def register(handler: BatchHandler) -> BatchHandler:
            async def on_fetched(bodies: list[BaseModel]) -> None:
                raws: list[Msg] = self.current_message().raw_message
                await self._settle(channel, raws, handler)

            # Documented as a list of the payload; FastStream decodes nothing (`undecoded`
            # gives it an empty list): _settle validates each message by itself.
            on_fetched.__annotations__["bodies"] = list[payload]  # type: ignore[valid-type]
            self.subscriber(
                channel,
                span_each=False,
                pull_sub=PullSub(batch_size=self.settings.prefetch, timeout=FILL_S, batch=True),
                ack_policy=AckPolicy.MANUAL,
                decoder=undecoded,
            )(on_fetched)
            return handler

        return register

    async def _settle(self, channel: Channel, raws: list[Msg], handler: BatchHandler) -> None:
        """Validate each fetched message, hand the valid ones to `handler`, and ack, nack or
        dead-letter each by its outcome (an invalid one is dead-lettered with the reason)."""
        name, started = self.name(channel), time.perf_counter()
        valid: list[Msg] = []
        received: list[Received] = []
        for raw in raws:
            headers = raw.headers or {}
            try:
                body = channel.payload.model_validate_json(raw.data)
            except ValidationError as exc:
                await self._dead_letter_fetched(raw, name, invalid_reason(exc), 0.0)
                continue
            valid.append(raw)
            received.append(
                Received(
                    body,
                    headers.get(MSG_ID),
                    headers.get("correlation_id"),
                    headers.get(tracing.TRACEPARENT),
                )
            )
        outcomes = await outcomes_of(handler, received) if received else []
        seconds = time.perf_counter() - started
        for raw, outcome in zip(valid, outcomes, strict=True):
            if outcome is None:
                await raw.ack()
                counted(self, name, "ok", seconds)
            elif (deliveries := _delivered(raw)) < self.settings.delivery_limit:
                await raw.nak()
                counted(self, name, "error", seconds)
            else:
                reason = failed_reason(deliveries, outcome)
                await self._dead_letter_fetched(raw, name, reason, seconds)

    async def _dead_letter_fetched(
        self, raw: Msg, channel_name: str, reason: str, seconds: float
    ) -> None:
        headers = raw.headers or {}
        await dead_lettered(
            self, channel_name, raw.data, headers, reason, headers.get(MSG_ID), _delivered(raw)
        )
        await raw.ack()
        counted(self, channel_name, "dead-lettered", seconds)

    @contextlib.contextmanager
    def handling(self, msg: StreamMessage[Any]) -> Iterator[None]:
        raws = msg.raw_message if isinstance(msg.raw_message, list) else [msg.raw_message]
        for raw in raws:
            self._handling[id(raw)] = raw
        try:
            yield
        finally:
            for raw in raws:
                self._handling.pop(id(raw), None)

    async def _keep_claimed(self) -> None:
        """In-progress acks for the messages being handled, well within ack_wait."""
        while True:
            await asyncio.sleep(ACK_WAIT_S / 3)
            for raw in list(self._handling.values()):
                with contextlib.suppress(Exception):  # acked meanwhile, or disconnected
                    await raw.in_progress()

    def deliveries(self, msg: StreamMessage[Any]) -> int:
        return _delivered(msg.raw_message)

    def channel_of(self, msg: StreamMessage[Any]) -> str:
        return str(msg.raw_message.subject)

    # -- publishing --------------------------------------------------------------

    def _publication(
        self, channel: Channel, message_id: str | None, headers: dict[str, Any] | None
    ) -> dict[str, Any]:
        all_headers = {k: str(v) for k, v in (headers or {}).items()}
        if message_id:
            all_headers[MSG_ID] = message_id
        return {
            "subject": self.name(channel),
            "stream": self._stream_of(channel).name,
            "headers": all_headers,
        }

    def _publisher_destination(self, channel: Channel) -> dict[str, Any]:
        # The JStream itself, not its name: FastStream would declare a stream it is
        # given by name, with its own defaults (connect() declares ours).
        return {"subject": self.name(channel), "stream": self._stream_of(channel)}

    async def _confirmed_sender(
        self, channel: Channel, correlation_id: str | None, headers: dict[str, str]
    ) -> Callable[[str, bytes], Awaitable[None]]:
        js = await self._jetstream()
        subject, stream = self.name(channel), self.work.name
        base = {"content-type": "application/json", **headers}
        if correlation_id:
            base["correlation_id"] = correlation_id

        async def send(message_id: str, body: bytes) -> None:
            await js.publish(
                subject,
                body,
                stream=stream,
                headers={**base, MSG_ID: message_id},
                # A PubAck takes milliseconds; one that has not come in this long went to a
                # server that is gone, and publish_stream sends the item again.
                timeout=min(self.settings.upstream_timeout_s, PUBACK_TIMEOUT_S),
            )

        return send

    async def publish_raw(
        self,
        channel: Channel,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        js = await self._jetstream()
        all_headers = {
            **tracing.with_current_trace(headers),
            **({MSG_ID: message_id} if message_id else {}),
        }
        await js.publish(
            self.name(channel),
            body,
            stream=self._stream_of(channel).name,
            headers=all_headers or None,
            timeout=self.settings.upstream_timeout_s,
        )

    # -- dead letters ------------------------------------------------------------

    async def dead_letter(
        self,
        channel_name: str,
        body: bytes,
        headers: dict[str, Any],
        reason: str,
        message_id: str | None = None,
        deliveries: int = 1,
    ) -> None:
        # FastStream's publish (PubAck awaited, as with js.publish): TestNatsBroker routes it too.
        # Without Nats-Msg-Id: the dead-letter stream would take a second one as a duplicate.
        await self.broker.publish(
            body,
            subject=channel_name + DEAD_SUFFIX,
            stream=self.dead.name,
            headers=dead_letter_headers(
                {k: v for k, v in headers.items() if k != MSG_ID},
                reason=reason,
                channel=channel_name,
                message_id=headers.get(MSG_ID) or message_id,  # the id msarch published with
                deliveries=deliveries,
            ),
            timeout=self.settings.upstream_timeout_s,
        )

    async def iter_dead_letters(self, channel: Channel) -> AsyncIterator[tuple[bytes, str]]:
        js = await self._jetstream()
        subscription = await js.pull_subscribe(
            self.name(channel) + DEAD_SUFFIX,
            durable=self._durable(channel, "-dead"),
            stream=self.dead.name,
        )
        try:
            while True:
                try:
                    batch = await subscription.fetch(100, timeout=1)
                except TimeoutError:  # nats' own, or asyncio's from a partial fetch
                    return
                for message in batch:
                    reason = (message.headers or {}).get(REASON_HEADER, "unknown")
                    await message.ack()
                    yield message.data, reason
        finally:
            await subscription.unsubscribe()

    async def dead_letters(self, channel: Channel, limit: int = 100) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        async for letter in self._dead_in_order(channel):
            if len(found) >= limit:
                break
            found.append(letter)
        return found

    async def dead_letter_count(self, channel: Channel) -> int:
        js = await self._jetstream()
        subject = self.name(channel) + DEAD_SUFFIX
        info = await js.stream_info(self.dead.name, subjects_filter=subject)
        return int((info.state.subjects or {}).get(subject, 0))

    async def requeue_dead(self, channel: Channel, ids: Collection[str] | None) -> list[str]:
        js = await self._jetstream()
        requeued: list[str] = []
        async for letter in self._dead_in_order(channel):
            if ids is not None and letter.id not in ids:
                continue
            # A Nats-Msg-Id of its own: within the work stream's duplicate window the original
            # id would be taken for the first delivery and dropped. msarch's idempotency is in
            # the message (its id, a batch item's index), which goes back as it was.
            await self.publish_raw(
                channel,
                letter.body,
                message_id=f"{letter.message_id or 'dead'}:requeued:{letter.id}",
                headers={**letter.headers, MESSAGE_ID_HEADER: letter.message_id or ""},
            )
            await js.delete_msg(self.dead.name, int(letter.id))
            requeued.append(letter.id)
        return requeued

    async def drop_dead(self, channel: Channel, ids: Collection[str]) -> list[str]:
        js = await self._jetstream()
        dropped: list[str] = []
        async for letter in self._dead_in_order(channel):
            if letter.id in ids:
                await js.delete_msg(self.dead.name, int(letter.id))
                dropped.append(letter.id)
        return dropped

    async def _dead_in_order(self, channel: Channel) -> AsyncIterator[DeadLetter]:
        """The channel's dead letters, oldest first, read by sequence (no consumer: a read
        leaves them in the stream)."""
        js = await self._jetstream()
        subject = self.name(channel) + DEAD_SUFFIX
        seq = 1
        while True:
            try:
                raw = await js.get_msg(self.dead.name, seq, subject=subject, next=True)
            except NotFoundError:
                return
            yield read_dead_letter(str(raw.seq), channel, raw.data or b"", dict(raw.headers or {}))
            seq = int(raw.seq or seq) + 1

    # -- lag ---------------------------------------------------------------------

    async def consumer_lag(self, channel: Channel) -> int:
        # The messages of its stream not yet delivered to this service's durable consumer.
        js = await self._jetstream()
        consumer = self._subscription(channel)
        info = await js.consumer_info(consumer["stream"].name, consumer["durable"])
        return int(info.num_pending or 0)

    # -- lifecycle ---------------------------------------------------------------

    async def _jetstream(self) -> JetStreamContext:
        """nats-py's JetStream API: for raw bytes, dead letters, streams and pipelined PubAcks."""
        self._require_connected()
        client = await self.broker.connect()  # public: returns the open connection
        return client.jetstream()

    async def start(self) -> None:
        await super().start()
        self._keeper = asyncio.create_task(self._keep_claimed(), name="nats:keep-claimed")

    async def stop(self) -> None:
        await super().stop()
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)

    # -- declaring and dropping --------------------------------------------------

    async def _declare(self) -> None:
        js = await self._jetstream()
        for stream in (self.work, self.broadcast, self.dead):
            await _declare_stream(js, replace(stream.config, subjects=list(stream.subjects)))

    def broker_objects(self) -> dict[ObjectKind, list[str]]:
        # The durable consumers live in their stream and go with it.
        return {"stream": [s.name for s in (self.work, self.broadcast, self.dead)]}

    async def _drop(self) -> None:
        js = (await self.broker.connect()).jetstream()
        for name in self.broker_objects()["stream"]:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)


async def _declare_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one to this configuration."""
    try:
        await js.add_stream(config=config)
    except BadRequestError:
        # It exists with another configuration (e.g. an older version): update it.
        await js.update_stream(config=config)


def _delivered(raw: Msg) -> int:
    """How many times the server has delivered this message, this time included."""
    try:
        return int(raw.metadata.num_delivered)
    except NotJSMessageError:  # a core NATS message (as TestNatsBroker routes a publish)
        return 1
