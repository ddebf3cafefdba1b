"""A private msarch stack: the real services as processes, on free ports."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from msarch.settings import SERVICES, Settings
from msarch.storage import Store
from msarch.supervision import ServiceProcess
from tests.utils.infra import delete_namespace, env_of, free_port, isolated_settings


def _quiet(service: str, line: str) -> None:
    # Child output is kept out of the test log unless something goes wrong.
    if '"level": "ERROR"' in line or "Traceback" in line:
        print(f"{service} | {line}")


@dataclass
class Stack:
    settings: Settings
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    extra: list[ServiceProcess] = field(default_factory=list)

    @property
    def gateway_url(self) -> str:
        return self.settings.url_of("gateway")

    @property
    def ws_url(self) -> str:
        return self.gateway_url.replace("http://", "ws://", 1) + "/ws"

    def store(self) -> Store:
        return Store.from_url(self.settings.redis_url, self.settings.namespace)

    async def start(self, services: tuple[str, ...] = SERVICES) -> None:
        for service in services:
            self.processes[service] = ServiceProcess(
                service, self.settings, env=env_of(self.settings), printer=_quiet
            )
        await asyncio.gather(*(self.processes[s].start() for s in services))
        await asyncio.gather(*(self.processes[s].wait_healthy(60) for s in services))

    async def restart(self, service: str) -> None:
        process = self.processes[service]
        await process.start()
        await process.wait_healthy(60)

    async def add_instance(self, service: str) -> ServiceProcess:
        """One more instance of a service, on a port of its own."""
        settings = self.settings.model_copy(update={f"{service}_port": free_port()})
        process = ServiceProcess(service, settings, env=env_of(settings), printer=_quiet)
        await process.start()
        await process.wait_healthy(60)
        self.extra.append(process)
        return process

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in [*self.extra, *self.processes.values()]))


@asynccontextmanager
async def running_stack(
    services: tuple[str, ...] = SERVICES, **overrides: object
) -> AsyncIterator[Stack]:
    """A private stack (own namespace, free ports, these settings), removed afterwards."""
    settings = isolated_settings(**overrides)
    stack = Stack(settings)
    try:
        await stack.start(services)
        yield stack
    finally:
        await stack.stop()
        await delete_namespace(settings.namespace)


async def ws_frames(url: str, into: list[dict[str, Any]], ready: asyncio.Event) -> None:
    """Collect websocket frames into a list until cancelled."""
    async with websockets.connect(url) as socket:
        ready.set()
        async for frame in socket:
            into.append(json.loads(frame))


async def wait_for(condition: Any, timeout_s: float = 30.0, interval_s: float = 0.05) -> None:
    """Poll an async or sync predicate until it is true."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = condition()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(interval_s)


async def post_json(client: httpx.AsyncClient, url: str, body: object) -> httpx.Response:
    return await client.post(url, json=body)


async def collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in iterator]
