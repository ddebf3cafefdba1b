"""The connected websocket clients of this instance, and the fan-out to them."""

import asyncio
import contextlib
import logging

from fastapi import WebSocket
from prometheus_client import Gauge

log = logging.getLogger("msarch.websocket.hub")

CLIENTS = Gauge("msarch_websocket_clients", "Connected websocket clients")
SEND_TIMEOUT_S = 5.0


class Hub:
    def __init__(self) -> None:
        self._clients: set[WebSocket] = set()

    def __len__(self) -> int:
        return len(self._clients)

    def join(self, client: WebSocket) -> None:
        self._clients.add(client)
        CLIENTS.set(len(self._clients))

    def leave(self, client: WebSocket) -> None:
        self._clients.discard(client)
        CLIENTS.set(len(self._clients))

    async def push(self, text: str) -> int:
        """Send a text frame to every client; a client too slow or gone is dropped."""
        clients = list(self._clients)
        results = await asyncio.gather(
            *(asyncio.wait_for(c.send_text(text), SEND_TIMEOUT_S) for c in clients),
            return_exceptions=True,
        )
        for client, result in zip(clients, results, strict=True):
            if isinstance(result, BaseException):
                log.info("dropping websocket client: %r", result)
                self.leave(client)
                await _close_quietly(client)
        return sum(1 for r in results if not isinstance(r, BaseException))


async def _close_quietly(client: WebSocket) -> None:
    with contextlib.suppress(Exception):  # the client is already gone
        await client.close(code=1011)
