"""The services as supervised child processes: started, watched, restarted, stopped in order.

Each service runs as `python -m msarch serve <service>` (uvicorn). Its output goes
line by line to a `Printer` the caller chooses (the CLI prefixes each line with
the service's name; tests keep it quiet); nothing here prints on its own. A
service that dies is restarted (like `restart: always`), after a pause that doubles from 1 s
to 30 s while it keeps dying, with the reason; `stop()` lets every
service finish its in-flight messages.
"""

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from msarch.embedded import FIRST_PAUSE_S, STABLE_S, exit_reason, next_pause
from msarch.settings import SERVICES, Settings

Printer = Callable[[str, str], None]
"""Gets (service, line) for every line a service writes and every restart."""


@dataclass
class ServiceProcess:
    """One service as a child process."""

    service: str
    settings: Settings
    env: Mapping[str, str] = field(default_factory=dict)
    printer: Printer | None = None
    process: asyncio.subprocess.Process | None = None
    last_lines: deque[str] = field(default_factory=lambda: deque(maxlen=3))
    """What it printed last: why it died, when it did."""
    _pump: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.settings.port_of(self.service)

    @property
    def url(self) -> str:
        return self.settings.url_of(self.service)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process else None

    async def start(self) -> None:
        command = [
            sys.executable, "-m", "msarch", "serve", self.service,
            "--host", self.settings.host, "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        self.process = await asyncio.create_subprocess_exec(
            *command,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to the supervisor, which stops children in order
        )
        self._pump = asyncio.create_task(self._pump_output(self.process))

    async def _pump_output(self, process: asyncio.subprocess.Process) -> None:
        # Read even when nobody prints: a full pipe would block the child.
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.last_lines.append(line)
            if self.printer is not None:
                self.printer(self.service, line)

    async def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Until GET /health answers 200; RuntimeError if it exits, TimeoutError if too slow."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if not self.running:
                    raise RuntimeError(f"{self.service} exited with code {self.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/health")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.service} was not healthy within {timeout_s:g} s")

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        if self._pump is not None:
            await self._pump
        return code

    async def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within the graceful timeout."""
        if not self.running:
            return self.returncode
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s or self.settings.graceful_timeout_s + 5):
                return await self.wait()
        except TimeoutError:
            self.process.kill()
            return await self.wait()

    async def kill(self) -> None:
        """kill -9: no chance to finish anything."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            await self.wait()


class Supervisor:
    """Runs the services, restarts any that dies, stops them all on request."""

    def __init__(
        self,
        settings: Settings,
        services: Sequence[str] = SERVICES,
        printer: Printer | None = None,
    ) -> None:
        self.settings = settings
        env = {
            "MSARCH_BROKER_URL": settings.broker_url,
            "MSARCH_REDIS_URL": settings.redis_url,
        }
        self.processes = {
            s: ServiceProcess(s, settings, env=env, printer=printer) for s in services
        }
        self.printer = printer
        self._stopping = asyncio.Event()

    async def start(self, timeout_s: float = 60.0) -> None:
        """Every service started and healthy; RuntimeError or TimeoutError otherwise."""
        await asyncio.gather(*(p.start() for p in self.processes.values()))
        await asyncio.gather(*(p.wait_healthy(timeout_s) for p in self.processes.values()))

    async def supervise(self) -> None:
        """Until stop(): restart a service that exits, with a growing pause."""
        await asyncio.gather(*(self._watch(p) for p in self.processes.values()))

    async def _watch(self, process: ServiceProcess) -> None:
        pause = FIRST_PAUSE_S
        while not self._stopping.is_set():
            started = time.monotonic()
            code = await process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > STABLE_S:
                pause = FIRST_PAUSE_S
            last = process.last_lines[-1][:300] if process.last_lines else "nothing"
            self._say(
                process.service,
                f"{exit_reason(code)} (its last line: {last}); restarting in {pause:g} s",
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            pause = next_pause(pause)
            await process.start()

    async def stop(self) -> None:
        self._stopping.set()
        # The gateway first, so no new work arrives while the others drain.
        if gateway := self.processes.get("gateway"):
            await gateway.stop()
        await asyncio.gather(*(p.stop() for p in self.processes.values()))

    def _say(self, service: str, line: str) -> None:
        if self.printer is not None:
            self.printer(service, line)


def stop_requested() -> asyncio.Event:
    """An event set on SIGINT or SIGTERM (Ctrl-C, `kill`), for this process's running loop."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event
