"""The websocket clients of this instance, and the fan-out to them.

A client that reconnects with ?after=<event id> first catches up from the
event log, then goes live. Live frames that arrive while it catches up are
held and sent after, minus those the log already gave it: no gap, no duplicate.
"""

import asyncio
import contextlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import WebSocket
from prometheus_client import Gauge

log = logging.getLogger("msarch.websocket.hub")

CLIENTS = Gauge("msarch_websocket_clients", "Connected websocket clients")
SEND_TIMEOUT_S = 5.0
RECENT_EVENTS = 4096


def position(event_id: str) -> tuple[int, int]:
    """A Redis Stream id ("<ms>-<seq>") as a comparable position in the log."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class Client:
    socket: WebSocket
    held: list[tuple[str | None, str]] | None = None
    """Live frames held while catching up; None once live."""
    caught_up_to: tuple[int, int] | None = None
    """Frames at or before this position were sent from the log."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, text: str) -> None:
        async with self.lock:  # frames go out whole and in order
            await asyncio.wait_for(self.socket.send_text(text), SEND_TIMEOUT_S)

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

    def __len__(self) -> int:
        return len(self._clients)

    def join(self, socket: WebSocket, *, catching_up: bool) -> Client:
        client = Client(socket, held=[] if catching_up else None)
        self._clients.add(client)
        CLIENTS.set(len(self._clients))
        return client

    def leave(self, client: Client) -> None:
        self._clients.discard(client)
        CLIENTS.set(len(self._clients))

    async def go_live(self, client: Client, caught_up_to: str | None) -> None:
        """Catch-up is done up to `caught_up_to`: send what was held, then stream."""
        client.caught_up_to = position(caught_up_to) if caught_up_to else None
        while client.held:
            event_id, text = client.held.pop(0)
            if not client.already_sent(event_id):
                await client.send(text)
        client.held = None

    async def push(self, text: str, event_id: str | None) -> int:
        """Send a frame to every client; a client too slow or gone is dropped."""
        if event_id is not None:
            if event_id in self._recent:
                return 0  # a re-forward after a store crash: already pushed
            self._recent[event_id] = None
            if len(self._recent) > RECENT_EVENTS:
                self._recent.popitem(last=False)
        live: list[Client] = []
        for client in list(self._clients):
            if client.held is not None:
                client.held.append((event_id, text))
            elif not client.already_sent(event_id):
                live.append(client)
        results = await asyncio.gather(
            *(client.send(text) for client in live), return_exceptions=True
        )
        for client, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                log.info("dropping websocket client: %r", result)
                self.leave(client)
                with contextlib.suppress(Exception):  # the client is already gone
                    await client.socket.close(code=1011)
        return sum(1 for r in results if not isinstance(r, BaseException))
