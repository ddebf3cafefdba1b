"""A private compose project of the local container stack, for tests/containers.

It is `just compose-local` (infra/local/compose.sh: infra/compose.yaml with the local images of
infra/compose.local.yaml) under a project name of its own, with free host ports, so it never
meets a user's stack; with stack="cluster" it is `just compose-local cluster`
(infra/compose.cluster.yaml: three RabbitMQ nodes, three NATS servers, Redis with a replica and
three Sentinels, two instances of each service). Its engines are containers of its own: killing
or partitioning them touches nothing shared. Tests reach the gateways on their published ports
and the other containers at their addresses on the project's own Docker network.
"""

import asyncio
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from uuid import uuid4

import httpx
import pytest
import redis.asyncio as aioredis

from msarch.embedded import free_port
from msarch.storage import Store

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "local" / "compose.sh"

Stack = Literal["single", "cluster"]
RABBITMQ_NODES = ("rabbitmq1", "rabbitmq2", "rabbitmq3")
NATS_SERVERS = ("nats1", "nats2", "nats3")
SENTINELS = ("sentinel1", "sentinel2", "sentinel3")
REDIS_MASTER = "mymaster"


def stream_detail(report: dict[str, Any], stream: str) -> dict[str, Any] | None:
    """A stream's entry in a NATS server's /jsz?streams=true report (None if it has none)."""
    for account in report.get("account_details", []):
        for detail in account.get("stream_detail", []):
            if detail["name"] == stream:
                found: dict[str, Any] = detail
                return found
    return None


class ComposeError(RuntimeError):
    """A docker or compose command failed; the message has its output."""


async def run(*command: str, env: dict[str, str] | None = None, timeout_s: float = 600) -> str:
    """Run a command, return its output; raise ComposeError with the output if it fails."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    try:
        async with asyncio.timeout(timeout_s):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ComposeError(f"{' '.join(command)}: no end within {timeout_s:g} s") from None
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise ComposeError(f"{' '.join(command)} exited with {process.returncode}:\n{text[-4000:]}")
    return text


@dataclass
class ComposeStack:
    project: str = field(default_factory=lambda: f"msarch-test-{uuid4().hex[:8]}")
    gateway_port: int = field(default_factory=free_port)
    consul_port: int = field(default_factory=free_port)
    rabbitmq_ui_port: int = field(default_factory=free_port)
    gateway2_port: int = field(default_factory=free_port)
    """The second gateway's host port (the cluster stack's gateway-2)."""
    stack: Stack = "single"
    """MSARCH_COMPOSE_STACK: compose.yaml ("single") or compose.cluster.yaml ("cluster")."""
    broker_url: str | None = None
    """MSARCH_COMPOSE_BROKER_URL: None for the file's RabbitMQ; nats://nats:4222 for NATS (the
    cluster: nats://nats1:4222,nats://nats2:4222,nats://nats3:4222)."""
    profiles: tuple[str, ...] = ()
    """Compose profiles to start as well (COMPOSE_PROFILES), e.g. ("nats",)."""
    up_s: float = 0.0
    """How long `compose.sh up` took: images checked or built, stack started, gateway healthy."""

    @property
    def env(self) -> dict[str, str]:
        return {
            "MSARCH_COMPOSE_PROJECT": self.project,
            "MSARCH_COMPOSE_GATEWAY_PORT": str(self.gateway_port),
            "MSARCH_COMPOSE_CONSUL_PORT": str(self.consul_port),
            "MSARCH_COMPOSE_RABBITMQ_UI_PORT": str(self.rabbitmq_ui_port),
            "MSARCH_COMPOSE_GATEWAY2_PORT": str(self.gateway2_port),
            "MSARCH_COMPOSE_STACK": self.stack,
            "COMPOSE_PROFILES": ",".join(self.profiles),
            **({"MSARCH_COMPOSE_BROKER_URL": self.broker_url} if self.broker_url else {}),
        }

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def gateway2_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway2_port}"

    @property
    def gateway_urls(self) -> list[str]:
        """Every gateway the stack publishes: one, or two for the cluster."""
        return [self.gateway_url, *([self.gateway2_url] if self.stack == "cluster" else [])]

    @property
    def consul_url(self) -> str:
        return f"http://127.0.0.1:{self.consul_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/ws"

    async def compose(self, *args: str, timeout_s: float = 600) -> str:
        return await run(str(COMPOSE), *args, env=self.env, timeout_s=timeout_s)

    async def up(self) -> None:
        started = asyncio.get_running_loop().time()
        try:
            await self.compose("up")
        except ComposeError as exc:
            raise ComposeError(f"{exc}\n{await self.unhealthy_report()}") from None
        self.up_s = asyncio.get_running_loop().time() - started

    async def unhealthy_report(self) -> str:
        """Each of the project's containers that is not healthy: its state, its last health
        check outputs and the tail of its log (what a failed `up` needs to be understood)."""
        names = await run(
            "docker", "ps", "--all", "--filter", f"label=com.docker.compose.project={self.project}",
            "--format", "{{.Names}} {{.Status}}",
        )  # fmt: skip
        lines = [f"containers:\n{names}"]
        for name, status in (line.split(" ", 1) for line in names.splitlines() if " " in line):
            if "(healthy)" in status:
                continue
            health = await run(
                "docker", "inspect", "--format", "{{if .State.Health}}{{range .State.Health.Log}}"
                "{{.ExitCode}}: {{.Output}}{{end}}{{end}}", name,
            )  # fmt: skip
            log = await run("docker", "logs", "--tail", "30", name)
            lines.append(f"--- {name} ({status})\nhealth checks:\n{health}\nlog tail:\n{log}")
        return "\n".join(lines)[-12000:]

    async def down(self) -> None:
        """Remove the project's containers, network and volumes (images are kept for reuse)."""
        await self.compose("down", "--volumes", "--remove-orphans", timeout_s=180)

    async def scale(self, **replicas: int) -> None:
        scales = [arg for name, n in replicas.items() for arg in ("--scale", f"{name}={n}")]
        await self.compose("up", "-d", "--no-recreate", *scales)

    async def containers(self, service: str, *, running_only: bool = True) -> list[str]:
        """The names of a service's containers, oldest first."""
        output = await run(
            "docker", "ps", *([] if running_only else ["--all"]),
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
            "--format", '{{.Label "com.docker.compose.container-number"}} {{.Names}}',
        )  # fmt: skip
        numbered = [line.split() for line in output.splitlines()]
        return [name for _, name in sorted(numbered, key=lambda pair: int(pair[0]))]

    async def container(self, service: str) -> str:
        [name] = await self.containers(service)
        return name

    async def inspect(self, container: str) -> dict[str, Any]:
        [info] = json.loads(await run("docker", "inspect", container))
        inspected: dict[str, Any] = info
        return inspected

    async def address(self, container: str) -> str:
        """The container's address on the project's network."""
        networks = (await self.inspect(container))["NetworkSettings"]["Networks"]
        [network] = networks.values()
        address: str = network["IPAddress"]
        return address

    async def service_address(self, service: str) -> str:
        """The address of a one-container service (rabbitmq2, redis, sentinel1...)."""
        return await self.address(await self.container(service))

    async def network(self) -> str:
        """The name of the project's one network."""
        output = await run(
            "docker", "network", "ls", "--format", "{{.Name}}",
            "--filter", f"label=com.docker.compose.project={self.project}",
        )  # fmt: skip
        [name] = output.split()
        return name

    async def cut_off(self, container: str) -> None:
        """A partition: the container keeps running, its address and its name, but every packet
        between it and the other containers of the project is dropped, in its own network
        namespace. The host (the network's gateway) still reaches it, so a test can ask both
        sides what they see. Needs root (nsenter), as `just test` does."""
        network = await self.docker("network", "inspect", await self.network())
        [ipam] = json.loads(network)[0]["IPAM"]["Config"]
        subnet, host = ipam["Subnet"], ipam["Gateway"]
        await self._firewall(
            container,
            ["-A", "INPUT", "-s", host, "-j", "ACCEPT"],
            ["-A", "INPUT", "-s", subnet, "-j", "DROP"],
            ["-A", "OUTPUT", "-d", host, "-j", "ACCEPT"],
            ["-A", "OUTPUT", "-d", subnet, "-j", "DROP"],
        )

    async def heal(self, container: str) -> None:
        """Undo `cut_off`: the container's own filter rules (Docker puts none there) emptied."""
        await self._firewall(container, ["-F", "INPUT"], ["-F", "OUTPUT"])

    async def _firewall(self, container: str, *rules: list[str]) -> None:
        """iptables rules, in order, in the container's network namespace."""
        if os.geteuid() != 0:
            pytest.fail(
                "a partition enters the node's network namespace (nsenter), which needs root: "
                "run `just test` as root",
                pytrace=False,
            )
        pid = str((await self.inspect(container))["State"]["Pid"])
        for rule in rules:
            await run("nsenter", "--target", pid, "--net", "iptables", "-w", "5", *rule)

    async def docker(self, *args: str, timeout_s: float = 120) -> str:
        return await run("docker", *args, timeout_s=timeout_s)

    async def store(self) -> Store:
        """The stack's own Redis (the cluster's current primary), at its container's address."""
        primary = await self.redis_primary() if self.stack == "cluster" else "redis"
        return Store.from_url(f"redis://{await self.service_address(primary)}:6379/0")

    # Who leads what, in the cluster stack. Each asks the engines themselves, from any node that
    # answers (one may be killed or partitioned), and names the leader by its compose service.

    async def quorum_queue_leader(self, queue: str, vhost: str = "/") -> str:
        """The RabbitMQ node (rabbitmq1..3) that leads a quorum queue (its full name)."""
        failures = []
        for node in RABBITMQ_NODES:
            try:
                output = await run(
                    "docker", "exec", await self.container(node),
                    "rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "leader",
                    "--formatter", "json", timeout_s=30,
                )  # fmt: skip
            except (ComposeError, ValueError) as exc:  # ValueError: the container is not running
                failures.append(f"{node}: {exc}")
                continue
            leaders = {row["name"]: row["leader"] for row in json.loads(output)}
            if queue in leaders:
                leader: str = leaders[queue]
                return leader.partition("@")[2]  # rabbit@rabbitmq2: the node's hostname
            failures.append(f"{node}: no queue {queue!r} in vhost {vhost!r}")
        raise ComposeError(f"no leader of quorum queue {queue!r} found: {'; '.join(failures)}")

    async def jsz(self, server: str, query: str = "") -> dict[str, Any]:
        """A NATS server's JetStream report (/jsz on its monitoring port), e.g. query
        "streams=true"."""
        address = await self.service_address(server)
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.get(f"http://{address}:8222/jsz?{query}")
        answer.raise_for_status()
        report: dict[str, Any] = answer.json()
        return report

    async def stream_leader(self, stream: str) -> str:
        """The NATS server (nats1..3, its server_name) that leads a JetStream stream."""
        failures = []
        for server in NATS_SERVERS:
            try:
                report = await self.jsz(server, "streams=true")
            except (httpx.HTTPError, ValueError) as exc:
                failures.append(f"{server}: {exc!r}")
                continue
            leader: str = (stream_detail(report, stream) or {}).get("cluster", {}).get("leader", "")
            if leader:
                return leader
            failures.append(f"{server}: no leader of {stream!r} known")
        raise ComposeError(f"no leader of stream {stream!r} found: {'; '.join(failures)}")

    async def redis_primary(self) -> str:
        """The Redis service (redis or redis-replica) that a majority of the Sentinels name as
        the primary of mymaster (they answer with its name, which is the compose service)."""
        answers: Counter[str] = Counter()
        failures = []
        for sentinel in SENTINELS:
            try:
                client = aioredis.Redis(
                    host=await self.service_address(sentinel), port=26379,
                    socket_timeout=3, socket_connect_timeout=2, decode_responses=True,
                )  # fmt: skip
            except ValueError as exc:  # not running
                failures.append(f"{sentinel}: {exc}")
                continue
            try:
                answer = await client.sentinel_get_master_addr_by_name(REDIS_MASTER)
                if isinstance(answer, tuple | list):  # (host, port); None if unknown
                    answers[str(answer[0])] += 1
                else:
                    failures.append(f"{sentinel}: knows no primary")
            except aioredis.RedisError as exc:
                failures.append(f"{sentinel}: {exc!r}")
            finally:
                await client.aclose()
        primary, votes = answers.most_common(1)[0] if answers else ("", 0)
        if votes < len(SENTINELS) // 2 + 1:
            raise ComposeError(
                f"the Sentinels agree on no primary of {REDIS_MASTER}: {dict(answers)}; "
                + "; ".join(failures)
            )
        return primary

    async def healthy(self) -> bool:
        """Every running container of the project reports healthy, and so does each gateway."""
        output = await run(
            "docker", "ps", "--filter", f"label=com.docker.compose.project={self.project}",
            "--format", "{{.Names}} {{.Status}}",
        )  # fmt: skip
        lines = output.splitlines()
        if not lines or not all("(healthy)" in line for line in lines):
            return False
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                for url in self.gateway_urls:
                    if (await client.get(url + "/health")).status_code != 200:
                        return False
        except httpx.HTTPError:
            return False
        return True

    async def logs(self, container: str) -> str:
        return await run("docker", "logs", container)


async def running_compose(stack: ComposeStack) -> AsyncIterator[ComposeStack]:
    """A fixture's body: the stack up for the fixture's scope, removed with its volumes after.
    Without a Docker engine it fails and says what is missing; it never skips."""
    try:
        await run("docker", "info", timeout_s=30)
    except (OSError, RuntimeError) as exc:
        pytest.fail(
            f"the container suite needs a running Docker engine ({exc}); "
            "`just test` installs and starts one (tests/prepare.sh), or run infra/local/engine.sh",
            pytrace=False,
        )
    try:
        await stack.up()
        yield stack
    finally:
        await stack.down()
