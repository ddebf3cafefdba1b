"""Acking RabbitMQ deliveries many at a time: one `basic.ack` with multiple=True for a run of
delivery tags, once the work of every message in the run is done.

A multiple ack settles every unsettled delivery of its channel up to its tag, so it is only
safe where every delivery of that channel is known: an AckWindow belongs to one AMQP channel
that carries one consumer (the bus gives such a consumer a channel of its own), learns of each
delivery as it arrives, before anything can fail it, and covers a tag only when every tag below
it is done or was settled on its own (a nack, a dead letter's ack). Tags are counted from 1 on
each channel, a reopened channel included, so a window never outlives its channel.
"""

import logging
from collections.abc import Sequence

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.abc import AbstractChannel
from aiormq.exceptions import ChannelInvalidStateError

log = logging.getLogger("msarch.bus.rabbit")


class AckWindow:
    """The deliveries of one channel that no ack covers yet, in tag order."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self._next = 1
        """The lowest tag that no ack covers and no settlement of its own passed."""
        self._unsettled: dict[int, AbstractIncomingMessage] = {}

    def arrived(self, message: AbstractIncomingMessage) -> None:
        """A delivery of this channel, before its handler runs."""
        if message.delivery_tag is not None and message.delivery_tag >= self._next:
            self._unsettled[message.delivery_tag] = message

    async def ack(self, done: Sequence[AbstractIncomingMessage]) -> None:
        """These messages' work is done: one multiple ack for the run of tags from the lowest
        unsettled one up to the highest done one it reaches; a done message above a tag still
        being handled is acked on its own, so it waits for nothing."""
        done_tags = {message.delivery_tag for message in done}
        covered, last = [], None
        while (message := self._unsettled.get(self._next)) is not None:
            if message.locked:  # settled on its own: nacked, dead-lettered, acked
                pass
            elif self._next in done_tags:
                covered.append(message)
                last = self._next
            else:
                break  # still being handled: nothing above it may be acked together with it
            del self._unsettled[self._next]
            self._next += 1
        try:
            if last is not None:
                await self.channel.basic_ack(last, multiple=True)
            for message in covered:
                message.lock()  # acked: FastStream's own ack of it sends nothing
            for message in done:
                if not message.locked:
                    await message.ack()
        except CONNECTION_EXCEPTIONS as exc:
            # The channel is gone, and the broker gives its unacked deliveries to a consumer
            # again: their work is idempotent.
            log.warning("could not ack %d deliveries: %s", len(done_tags), exc)


class GroupAcks:
    """The ack windows of a service's consumers that ack in groups, one per open channel."""

    def __init__(self) -> None:
        self.queues: set[str] = set()
        """The queues consumed so: each on a channel of its own."""
        self._windows: dict[AbstractChannel, AckWindow] = {}

    def arrived(self, message: AbstractIncomingMessage) -> None:
        try:
            channel = message.channel
        except ChannelInvalidStateError:  # closed: it cannot be acked, it will come again
            return
        window = self._windows.get(channel)
        if window is None:  # a new or reopened channel: the windows of closed ones go
            self._windows = {c: w for c, w in self._windows.items() if not c.is_closed}
            window = self._windows[channel] = AckWindow(channel)
        window.arrived(message)

    async def ack(self, done: Sequence[AbstractIncomingMessage]) -> None:
        """Ack these deliveries, each run of them in its channel's window in one frame."""
        by_window: dict[AckWindow, list[AbstractIncomingMessage]] = {}
        for message in done:
            try:
                window = self._windows.get(message.channel)
            except ChannelInvalidStateError:
                continue
            if window is not None:
                by_window.setdefault(window, []).append(message)
        for window, messages in by_window.items():
            await window.ack(messages)
