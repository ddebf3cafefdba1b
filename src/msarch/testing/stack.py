"""A private msarch stack: the five services as processes, on free ports, on either backend.

`running_stack(backend, ...)` is the one way to get one; `stack_factory(backend)` binds the
backend so that a test (or a fixture) asks only for the settings it cares about.
"""

import asyncio
import contextlib
import inspect
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import websockets

from msarch.settings import SERVICES, Settings
from msarch.storage import Store
from msarch.supervision import Printer, ServiceProcess
from msarch.testing.isolation import env_of, free_port, isolated_settings, namespace_cleanup

__all__ = [
    "Stack",
    "StackFactory",
    "kill_leftovers",
    "pid_of",
    "running_stack",
    "stack_factory",
    "wait_for",
    "ws_frames",
]

START_TIMEOUT_S = 60.0

_started: set[int] = set()
"""Pids of every service process a stack started and has not stopped, for kill_leftovers()."""


def _quiet(service: str, line: str) -> None:
    # Child output is kept out of the caller's output unless something goes wrong.
    if '"level": "ERROR"' in line or "Traceback" in line:
        print(f"{service} | {line}")


def pid_of(process: ServiceProcess) -> int:
    if process.process is None:
        raise RuntimeError(f"{process.service} was not started")
    return process.process.pid


@dataclass
class Stack:
    """Services of one namespace as child processes; `processes` by service name."""

    settings: Settings
    printer: Printer = _quiet
    """Gets every line the services print (by default only errors reach the output)."""
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    extra: list[ServiceProcess] = field(default_factory=list)
    """Instances added with add_instance(), each on a port of its own."""

    @property
    def gateway_url(self) -> str:
        return self.settings.url_of("gateway")

    @property
    def ws_url(self) -> str:
        return self.gateway_url.replace("http://", "ws://", 1) + "/ws"

    def store(self) -> Store:
        """A Store on the stack's Redis and namespace (the caller closes it)."""
        return Store.from_settings(self.settings)

    async def _launch(self, process: ServiceProcess) -> None:
        await process.start()
        _started.add(pid_of(process))

    async def start(self, services: tuple[str, ...] = SERVICES) -> None:
        for service in services:
            self.processes[service] = ServiceProcess(
                service, self.settings, env=env_of(self.settings), printer=self.printer
            )
        await asyncio.gather(*(self._launch(self.processes[s]) for s in services))
        await asyncio.gather(*(self.processes[s].wait_healthy(START_TIMEOUT_S) for s in services))

    async def restart(self, service: str) -> None:
        process = self.processes[service]
        await self._launch(process)
        await process.wait_healthy(START_TIMEOUT_S)

    async def add_instance(
        self, service: str, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> ServiceProcess:
        """One more instance of a service, on a port of its own (and these settings; `env`
        added to its environment)."""
        settings = self.settings.model_copy(update={f"{service}_port": free_port(), **overrides})
        environment = {**env_of(settings), **(env or {})}
        process = ServiceProcess(service, settings, env=environment, printer=self.printer)
        self.extra.append(process)
        await self._launch(process)
        await process.wait_healthy(START_TIMEOUT_S)
        return process

    async def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM every process (SIGKILL after `timeout_s`, default graceful timeout + 5 s)."""
        processes = [*self.extra, *self.processes.values()]
        try:
            await asyncio.gather(*(p.stop(timeout_s) for p in processes))
        finally:
            for process in processes:
                await process.kill()  # only what is still running
                if process.process is not None:
                    _started.discard(process.process.pid)


@asynccontextmanager
async def running_stack(
    backend: str = "rabbit",
    services: tuple[str, ...] = SERVICES,
    *,
    stop_timeout_s: float | None = None,
    printer: Printer = _quiet,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    """A private stack on `backend` (own namespace, free ports, these Settings overrides),
    stopped and its namespace deleted on any exit, Ctrl-C included."""
    settings = isolated_settings(backend, **overrides)
    stack = Stack(settings, printer)
    async with namespace_cleanup(settings.namespace):
        try:
            await stack.start(services)
            yield stack
        finally:
            await asyncio.shield(stack.stop(stop_timeout_s))


class StackFactory(Protocol):
    """running_stack with the backend already chosen: `async with stack_with(...) as stack`."""

    def __call__(
        self, services: tuple[str, ...] = SERVICES, **overrides: Any
    ) -> AbstractAsyncContextManager[Stack]: ...


def stack_factory(backend: str) -> StackFactory:
    """Private stacks on one backend; each call takes running_stack's services and overrides."""

    def running(
        services: tuple[str, ...] = SERVICES, **overrides: Any
    ) -> AbstractAsyncContextManager[Stack]:
        return running_stack(backend, services, **overrides)

    return running


def kill_leftovers() -> None:
    """SIGKILL every service process a stack started and did not stop (for atexit)."""
    for pid in list(_started):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _started.clear()


async def ws_frames(url: str, into: list[dict[str, Any]], ready: asyncio.Event) -> None:
    """Collect websocket frames into a list until cancelled."""
    async with websockets.connect(url) as socket:
        ready.set()
        async for frame in socket:
            into.append(json.loads(frame))


Condition = Callable[..., object]
"""A predicate, sync or async, called with no arguments (`...`: lambdas binding a loop variable
as a default argument fit); its result counts by truthiness."""


async def wait_for(
    condition: Condition, timeout_s: float = 30.0, interval_s: float = 0.05, what: str = ""
) -> None:
    """Poll a sync or async predicate until it is true; after `timeout_s` a TimeoutError that
    names what was awaited: `what`, else the predicate (a lambda by its line of source)."""
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            while True:
                result = condition()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(interval_s)
    except TimeoutError:
        if not deadline.expired():  # the predicate's own
            raise
        raise TimeoutError(
            f"not true in {timeout_s:g} s: {what or _described(condition)}"
        ) from None


def _described(condition: Condition) -> str:
    name = getattr(condition, "__qualname__", repr(condition))
    if name.endswith("<lambda>"):
        try:
            return inspect.getsource(condition).strip()
        except (OSError, TypeError):
            pass
    return name
