"""The raw roundtrip chain: msarch's roundtrip path built from the libraries alone, measured
the way bench.roundtrip measures msarch's.

    client -> app (FastAPI: publish, confirm, 202) -> worker (aio-pika or nats-py: Redis SET,
    persistent publish to a broadcast, ack) -> websocket server (FastAPI: consume the
    broadcast, one frame to every client, ack) -> client

Four processes: the three children here (chain_app, chain_worker, chain_websocket), on free
loopback ports, and the bench itself as the client. One hop fewer than msarch's: no gateway.
"""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.baselines.chain_layout import ChainLayout, chain_objects
from bench.baselines.processes import HOST, Child, running
from bench.baselines.topology import Names, redis_keys
from bench.cpu import cpu_ms_per, cpu_snapshot
from bench.roundtrip import (
    DRAIN_TIMEOUT_S,
    answer_figures,
    completion_figures,
    frame_latency,
    new_load,
    reached,
)
from msarch.settings import Settings
from msarch.testing.isolation import free_port

NAMES = {"rabbit": "raw chain (aio-pika)", "nats": "raw chain (nats-py)"}
"""What each backend's raw chain is called in tables and lines."""


@dataclass
class RawChain:
    """A running raw chain: its app and its websocket server, by port."""

    name: str
    app_port: int
    websocket_port: int
    children: dict[str, Child] = field(default_factory=dict)
    """By role: app, worker, websocket."""

    def pids(self) -> dict[str, int]:
        return {role: child.process.pid for role, child in self.children.items() if child.process}

    async def forwarded(self) -> int:
        """How many messages the websocket server has consumed (RuntimeError, with its last
        lines, when a process of the chain has died)."""
        for child in self.children.values():
            await child.check_running()
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.get(f"http://{HOST}:{self.websocket_port}/stats")
        return int(answer.json()["forwarded"])

    async def latency(self, samples: int) -> dict[str, Any]:
        return await frame_latency(HOST, self.app_port, samples, ws_port=self.websocket_port)

    async def load(self, concurrency: int, duration_s: float) -> dict[str, Any]:
        """A closed-loop load on the app, then until the websocket server consumed each."""
        before, pids = await self.forwarded(), self.pids()
        cpu_before = cpu_snapshot(pids)
        started = time.perf_counter()
        load = new_load(f"http://{HOST}:{self.app_port}", concurrency)
        await load.run(duration_s=duration_s)
        behind = max(0, before + load.accepted - await self.forwarded())
        what = "the raw websocket server's messages"
        completed_at = await reached(self.forwarded, before + load.accepted, DRAIN_TIMEOUT_S, what)
        return {
            **answer_figures(load),
            **completion_figures(load, started, behind, completed_at),
            "cpu_ms_per_request": cpu_ms_per(cpu_before, pids, load.accepted),
        }


@asynccontextmanager
async def running_chain(backend: str, settings: Settings) -> AsyncIterator[RawChain]:
    """The raw chain on `backend` with msarch's prefetch and delivery limit (from `settings`),
    its processes stopped and its objects deleted on any exit."""
    names = Names.new()
    layout = ChainLayout(names)
    chain = RawChain(NAMES[backend], app_port=free_port(), websocket_port=free_port())
    prefetch = str(settings.prefetch)
    module = "bench.baselines."
    async with (
        chain_objects(backend, layout, settings.prefetch, settings.delivery_limit),
        redis_keys(names) as redis_url,
    ):
        websocket = Child(
            module + "chain_websocket",
            [backend, names.namespace, str(chain.websocket_port), "--prefetch", prefetch],
        )
        worker = Child(
            module + "chain_worker", [backend, names.namespace, redis_url, "--prefetch", prefetch]
        )
        app = Child(module + "chain_app", [backend, names.namespace, str(chain.app_port)])
        chain.children = {"app": app, "worker": worker, "websocket": websocket}
        async with running(websocket, worker, app):
            yield chain
