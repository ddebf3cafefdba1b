"""The websocket clients of this instance, and the fan-out to them.

A client that reconnects with ?after=<event id> first catches up from the
event log, then goes live. Live frames that arrive while it catches up are
held and sent after, minus those the log already gave it: no gap, no duplicate.

Each client has an outbox of OUTBOX_BYTES (or OUTBOX_FRAMES) and a writer of its own,
so a push never waits for a client: one that reads too slowly to keep up fills its outbox
(or its held frames) and is disconnected with 1008 and the reason; one whose socket takes
more than SEND_TIMEOUT_S for a frame, or breaks, is dropped with 1011. What a slow client
costs is bounded: its outbox here, plus what the kernel's socket buffers hold for it
(measured in tests/e2e/test_gateway_edge.py).
"""

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import WebSocket
from prometheus_client import Gauge

from msarch.observability import TRANSPORT_KEY

log = logging.getLogger("msarch.websocket.hub")

CLIENTS = Gauge("msarch_websocket_clients", "Connected websocket clients")
SEND_TIMEOUT_S = 5.0
RECENT_EVENTS = 4096
OUTBOX_BYTES = 4 * 1024 * 1024
"""Bytes of frames a client may be behind (some 16,000 frames of a small roundtrip) ..."""
OUTBOX_FRAMES = 256
"""... or frames, whichever allows more: a burst of as many frames as the subscriber takes
at once (MSARCH_PREFETCH, 256) never cuts off a client that reads, however large."""
TOO_SLOW = 1008


def position(event_id: str) -> tuple[int, int]:
    """A Redis Stream id ("<ms>-<seq>") as a comparable position in the log."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class Client:
    socket: WebSocket
    held: list[tuple[str | None, str, int]] | None = None
    """Live frames held while catching up; None once live."""
    caught_up_to: tuple[int, int] | None = None
    """Frames at or before this position were sent from the log."""
    outbox: "asyncio.Queue[tuple[str, int]]" = field(default_factory=asyncio.Queue)
    """Frames to send, each with its size in bytes."""
    queued_bytes: int = 0
    """Of the frames in the outbox, or held."""
    room: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while the outbox is below OUTBOX_BYTES."""
    writer: "asyncio.Task[None] | None" = None

    def __post_init__(self) -> None:
        self.room.set()

    async def send(self, text: str, size: int | None = None) -> None:
        """Queue a frame, waiting for room: the catch-up, at the pace of this client alone."""
        await self.room.wait()
        self._queue(text, len(text.encode()) if size is None else size)

    def offer(self, text: str, size: int) -> bool:
        """Queue a live frame of `size` bytes; False when the client is too far behind."""
        if not self._fits(size):
            return False
        self._queue(text, size)
        return True

    def hold(self, event_id: str | None, text: str, size: int) -> bool:
        """Hold a live frame while catching up; False when that is too many."""
        assert self.held is not None
        if not self._fits(size):
            return False
        self.held.append((event_id, text, size))
        self._count(size)
        return True

    def release(self, size: int) -> None:
        """A held frame of `size` bytes no longer counts."""
        self._count(-size)

    async def write(self) -> None:
        """Send the queued frames in order, each within SEND_TIMEOUT_S. A send to a socket
        that can take it does not suspend, so one turn of this task sends all that is queued:
        the pushes come from as many handler tasks as the subscriber runs at once, and a
        writer that gave way after each frame (asyncio.wait_for is a task per frame) fell a
        burst behind on a busy machine, so a client that reads was cut off as too slow."""
        while True:
            text, size = await self.outbox.get()
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await self.socket.send_text(text)
            finally:
                self._count(-size)
                self.outbox.task_done()

    def _fits(self, size: int) -> bool:
        frames = self.outbox.qsize() + len(self.held or ())
        return frames < OUTBOX_FRAMES or self.queued_bytes + size <= OUTBOX_BYTES

    def _queue(self, text: str, size: int) -> None:
        self.outbox.put_nowait((text, size))
        self._count(size)

    def _count(self, change: int) -> None:
        self.queued_bytes += change
        if self.queued_bytes < OUTBOX_BYTES:
            self.room.set()
        else:
            self.room.clear()

    def already_sent(self, event_id: str | None) -> bool:
        return (
            event_id is not None
            and self.caught_up_to is not None
            and position(event_id) <= self.caught_up_to
        )


class Hub:
    def __init__(self) -> None:
        self._clients: set[Client] = set()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._clients)

    def join(self, socket: WebSocket, *, catching_up: bool) -> Client:
        client = Client(socket, held=[] if catching_up else None)
        client.writer = asyncio.create_task(self._write(client), name="websocket:writer")
        self._clients.add(client)
        CLIENTS.set(len(self._clients))
        return client

    def leave(self, client: Client) -> None:
        self._clients.discard(client)
        CLIENTS.set(len(self._clients))
        if client.writer is not None and client.writer is not asyncio.current_task():
            client.writer.cancel()

    async def go_live(self, client: Client, caught_up_to: str | None) -> None:
        """Catch-up is done up to `caught_up_to`: send what was held, then stream."""
        client.caught_up_to = position(caught_up_to) if caught_up_to else None
        while client.held:
            event_id, text, size = client.held.pop(0)
            client.release(size)  # out of the held frames: queued again, or the log sent it
            if not client.already_sent(event_id):
                await client.send(text, size)
        client.held = None

    async def push(self, text: str, event_id: str | None) -> int:
        """Queue a frame for every client; returns how many it was queued or held for. A
        client too far behind is disconnected; none is waited for."""
        if event_id is not None:
            if event_id in self._recent:
                return 0  # a re-forward after a store crash: already pushed
            self._recent[event_id] = None
            if len(self._recent) > RECENT_EVENTS:
                self._recent.popitem(last=False)
        queued, size = 0, len(text.encode())
        for client in list(self._clients):
            if client.held is not None:
                kept = client.hold(event_id, text, size)
            elif client.already_sent(event_id):
                continue
            else:
                kept = client.offer(text, size)
            if kept:
                queued += 1
            else:
                self._drop(
                    client, TOO_SLOW, f"too slow: {client.queued_bytes} bytes of frames behind"
                )
        return queued

    async def flush(self) -> None:
        """Until every client's outbox is sent (or the client dropped): for tests and shutdown."""
        await asyncio.gather(*(client.outbox.join() for client in list(self._clients)))
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _write(self, client: Client) -> None:
        try:
            await client.write()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a timeout, a socket gone: this client only
            self._drop(client, 1011, "", repr(exc))

    def _drop(self, client: Client, code: int, reason: str, why: str | None = None) -> None:
        log.info("dropping websocket client: %s", why or reason)
        self.leave(client)
        while not client.outbox.empty():  # nobody will send these: flush() must not wait
            client.outbox.get_nowait()
            client.outbox.task_done()
        task = asyncio.create_task(self._close(client, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(client: Client, code: int, reason: str) -> None:
        """A close frame, and when it cannot be sent in time (the client reads nothing, so the
        frames before it never leave), the connection cut: it must not stay open for good."""
        try:
            await asyncio.wait_for(client.socket.close(code=code, reason=reason), SEND_TIMEOUT_S)
        except Exception:  # timed out, or the client is gone already
            transport = client.socket.scope.get(TRANSPORT_KEY)
            if transport is not None and not transport.is_closing():
                log.info("cutting off a websocket client whose close frame could not be sent")
                transport.abort()
