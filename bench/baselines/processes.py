"""The baselines' child processes: started with `python -m`, spoken to in JSON lines, always
stopped.

A child writes one JSON object per line on stdout: {"ready": true} once it can work, then
whatever figures it measured. Its stderr is read too (a full pipe would block it) and its last
lines say why it died. `running(...)` starts each child in a process group of its own and, on
any exit (Ctrl-C and errors included), sends the group SIGTERM, then SIGKILL; an atexit hook
kills what an error of the bench itself left, and a child whose parent is gone altogether
(killed with -9) stops by itself when its stdin closes.

Children run on uvloop, as msarch's services do (uvicorn picks it when it is installed), so
neither side of a comparison gets a faster event loop than the other.
"""

import asyncio
import atexit
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
import uvloop
from fastapi import FastAPI

from msarch.embedded import exit_reason

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0

_started: dict[int, asyncio.subprocess.Process] = {}
"""Children started and not yet stopped, by pid (each its process group's), for
kill_leftovers (atexit)."""


# -- the child's side --------------------------------------------------------------------------


def say(**figures: Any) -> None:
    """One JSON line to the parent."""
    print(json.dumps(figures), flush=True)


def say_ready() -> None:
    say(ready=True)


def run_child(main: Coroutine[Any, Any, None]) -> None:
    """The child's main coroutine on uvloop, until it returns or the parent goes."""
    uvloop.run(_while_parent_lives(main))


async def _while_parent_lives(main: Coroutine[Any, Any, None]) -> None:
    watching = asyncio.create_task(_stop_when_parent_goes())
    try:
        await main
    finally:
        watching.cancel()


async def _stop_when_parent_goes() -> None:
    """The parent holds this process's stdin open: its end (EOF) means the parent is gone,
    killed with -9 included, and this process stops as it would on the parent's SIGTERM."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    os.kill(os.getpid(), signal.SIGTERM)


async def serve_app(app: FastAPI, port: int) -> None:
    """Serve `app` on HOST:port with uvicorn as msarch's services are served (httptools,
    no access log); ready once its startup is done and it listens."""
    config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", access_log=False)
    await _AnnouncingServer(config).serve()


class _AnnouncingServer(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # not when the app's startup failed or the port was taken
            say_ready()


def clock() -> float:
    """CLOCK_MONOTONIC: one clock for every process of the machine, so the parent can take
    one child's timestamp from another's."""
    return time.monotonic()


# -- the parent's side -------------------------------------------------------------------------


@dataclass
class Child:
    """`python -m <module> <args>` of the bench's own interpreter."""

    module: str
    args: list[str]
    process: asyncio.subprocess.Process | None = None
    last_errors: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    _messages: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    _pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.module.rsplit(".", 1)[-1] + (f" {self.args[0]}" if self.args else "")

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, *self.args,
            stdin=asyncio.subprocess.PIPE,  # held open: closed, it tells the child to stop
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group: stop() reaches all of it
        )  # fmt: skip
        _started[self.process.pid] = self.process
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._pumps = [
            asyncio.create_task(self._read_messages(self.process.stdout)),
            asyncio.create_task(self._read_errors(self.process.stderr)),
        ]

    async def _read_messages(self, stdout: asyncio.StreamReader) -> None:
        async for raw in stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("{"):
                self._messages.put_nowait(json.loads(line))
            elif line:
                self.last_errors.append(line)
        self._messages.put_nowait(None)  # it closed stdout: it exited

    async def _read_errors(self, stderr: asyncio.StreamReader) -> None:
        async for raw in stderr:
            if line := raw.decode(errors="replace").rstrip():
                self.last_errors.append(line)

    async def message(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON line; RuntimeError (with its last lines) if it exits first."""
        try:
            async with asyncio.timeout(timeout_s):
                message = await self._messages.get()
        except TimeoutError:
            raise TimeoutError(f"{self.name} said nothing within {timeout_s:g} s") from None
        if message is None:
            self._messages.put_nowait(None)
            raise RuntimeError(await self._death())
        return message

    async def check_running(self) -> None:
        """RuntimeError, with its last lines, if it has exited."""
        if self.process is not None and self.process.returncode is not None:
            raise RuntimeError(await self._death())

    async def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        message = await self.message(timeout_s)
        if message != {"ready": True}:
            raise RuntimeError(f"{self.name} said {message} before it was ready")

    async def _death(self) -> str:
        assert self.process is not None
        code = await self.process.wait()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        last = " | ".join(self.last_errors) or "nothing"
        return f"{self.name} exited ({exit_reason(code)}); its last lines: {last}"

    async def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after STOP_TIMEOUT_S."""
        if self.process is None:
            return
        # Only while it has not been reaped: until then its pid, and its group's, are ours.
        if self.process.returncode is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.process.wait()
            except TimeoutError:
                _signal_group(self.process, signal.SIGKILL)
                await self.process.wait()
        _started.pop(self.process.pid, None)
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)


@asynccontextmanager
async def running(*children: Child) -> AsyncIterator[None]:
    """Start the children in order, each ready before the next; stop them all on the way out."""
    try:
        for child in children:
            await child.start()
            await child.ready()
        yield
    finally:
        await asyncio.shield(asyncio.gather(*(child.stop() for child in reversed(children))))


def _signal_group(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


def kill_leftovers() -> None:
    """SIGKILL every child not yet stopped, with its process group (for atexit)."""
    for process in list(_started.values()):
        _signal_group(process, signal.SIGKILL)
    _started.clear()


atexit.register(kill_leftovers)
