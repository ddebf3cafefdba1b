"""`msarch up`: the whole stack on this machine, as supervised processes.

Each service runs as `python -m msarch serve <service>` (uvicorn); its output is
prefixed with its name; a service that dies is restarted (like `restart:
always`); Ctrl-C or SIGTERM stops them all gracefully.
"""

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from msarch.embedded import Embedded, free_port, is_local, port_is_free, port_of
from msarch.settings import SERVICES, Settings

Printer = Callable[[str, str], None]

_COLOURS = {"gateway": 36, "roundtrip": 32, "batch": 33, "websocket": 35, "store": 34}


def plain_printer(service: str, line: str) -> None:
    colour = _COLOURS.get(service, 37)
    prefix = f"\x1b[{colour}m{service:<9}|\x1b[0m" if sys.stdout.isatty() else f"{service:<9}|"
    print(f"{prefix} {line}", flush=True)


@dataclass
class ServiceProcess:
    """One service as a child process."""

    service: str
    settings: Settings
    env: Mapping[str, str] = field(default_factory=dict)
    printer: Printer | None = plain_printer
    process: asyncio.subprocess.Process | None = None
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
            start_new_session=True,  # Ctrl-C goes to the runner, which stops children in order
        )
        self._pump = asyncio.create_task(self._pump_output(self.process))

    async def _pump_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            if self.printer is not None:
                self.printer(self.service, raw.decode(errors="replace").rstrip())

    async def wait_healthy(self, timeout_s: float = 30.0) -> None:
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

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process else None

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
        printer: Printer | None = plain_printer,
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
        await asyncio.gather(*(p.start() for p in self.processes.values()))
        await asyncio.gather(*(p.wait_healthy(timeout_s) for p in self.processes.values()))

    async def supervise(self) -> None:
        """Until stop(): restart a service that exits, with a growing pause."""
        await asyncio.gather(*(self._watch(p) for p in self.processes.values()))

    async def _watch(self, process: ServiceProcess) -> None:
        pause = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            code = await process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started > 30:
                pause = 1.0
            self._say(process.service, f"exited with code {code}; restarting in {pause:g} s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            pause = min(pause * 2, 10.0)
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


async def check_infrastructure(settings: Settings) -> dict[str, str]:
    """What cannot be reached ("broker", "redis"), with the reason."""
    from msarch.bus import create_bus
    from msarch.storage import Store

    problems: dict[str, str] = {}
    bus = create_bus(settings, service="runner")
    try:
        async with asyncio.timeout(5):
            await bus.broker.connect()
    except Exception as exc:
        problems["broker"] = _reason(exc)
    finally:
        with contextlib.suppress(Exception):
            await bus.broker.stop()
    store = Store.from_url(settings.redis_url, settings.namespace)
    try:
        async with asyncio.timeout(5):
            await store.ping()
    except Exception as exc:
        problems["redis"] = _reason(exc)
    finally:
        with contextlib.suppress(Exception):
            await store.close()
    return problems


async def provide_infrastructure(settings: Settings) -> tuple[Settings, Embedded | None]:
    """The settings to run with: as configured, or with embedded NATS/Redis where
    nothing answers locally. Raises SystemExit(1) with one line each otherwise."""
    problems = await check_infrastructure(settings)
    if not problems:
        return settings, None
    hints = {
        "broker": (
            settings.broker_url,
            "start RabbitMQ (`rabbitmq-server -detached`) or NATS, or set MSARCH_BROKER_URL",
        ),
        "redis": (settings.redis_url, "start redis-server or set MSARCH_REDIS_URL"),
    }
    local = {name: is_local(hints[name][0]) for name in problems}
    if not settings.embedded or not all(local.values()):
        for name, reason in problems.items():
            url, hint = hints[name]
            print(
                f"msarch: cannot reach {name} at {_safe(url)} ({reason}): {hint}", file=sys.stderr
            )
        raise SystemExit(1)
    embedded = Embedded(Path(settings.data_dir))
    updates: dict[str, str] = {}
    try:
        if "broker" in problems:
            port = (
                port_of(settings.broker_url, 4222)
                if settings.broker_url.startswith("nats")
                else 4222
            )
            updates["broker_url"] = await embedded.start_nats(
                port if port_is_free(port) else free_port()
            )
            print(
                f"msarch: no broker at {_safe(settings.broker_url)}; started NATS JetStream at "
                f"{updates['broker_url']} (data in {settings.data_dir}/nats, fsync always)",
                flush=True,
            )
        if "redis" in problems:
            port = port_of(settings.redis_url, 6379)
            updates["redis_url"] = await embedded.start_redis(
                port if port_is_free(port) else free_port()
            )
            print(
                f"msarch: no Redis at {_safe(settings.redis_url)}; started Redis at "
                f"{updates['redis_url']} (data in {settings.data_dir}/redis, AOF fsync always)",
                flush=True,
            )
    except (OSError, RuntimeError, TimeoutError) as exc:
        await embedded.stop()
        print(f"msarch: could not start embedded infrastructure: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    return settings.model_copy(update=updates), embedded


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:120] or type(exc).__name__


def _safe(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}"
    return url


async def run_stack(settings: Settings) -> int:
    try:
        settings, embedded = await provide_infrastructure(settings)
    except SystemExit as exit_:
        return int(exit_.code or 1)
    print(
        f"msarch: using broker {_safe(settings.broker_url)} and Redis {_safe(settings.redis_url)}",
        flush=True,
    )
    try:
        return await _run_services(settings)
    finally:
        if embedded is not None:
            await embedded.stop()
            print("msarch: embedded infrastructure stopped", flush=True)


async def _run_services(settings: Settings) -> int:
    supervisor = Supervisor(settings)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        await supervisor.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"msarch: the stack did not come up: {exc}", file=sys.stderr)
        await supervisor.stop()
        return 1
    gateway = settings.url_of("gateway")
    ws = gateway.replace("http://", "ws://", 1)
    print(
        "\nmsarch is up:\n"
        f"  web client  {gateway}/\n"
        f"  API         {gateway}/api/roundtrip, {gateway}/api/batch\n"
        f"  websocket   {ws}/ws\n"
        f"  docs        {gateway}/docs\n"
        f"  health      {gateway}/health\n"
        "Ctrl-C stops everything.\n",
        flush=True,
    )
    watcher = asyncio.create_task(supervisor.supervise())
    await stop_requested.wait()
    print("msarch: stopping (in-flight messages finish first)...", flush=True)
    await supervisor.stop()
    await watcher
    print("msarch: stopped", flush=True)
    return 0
