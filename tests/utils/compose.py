"""A private compose project of the local container stack, for tests/containers.

It is `just compose-local` (infra/local/compose.sh: infra/compose.yaml with the local images of
infra/compose.local.yaml) under a project name of its own, with free host ports, so it never
meets a user's stack. Its RabbitMQ, Redis and Consul are containers of its own: killing them
touches nothing shared. Tests reach the gateway on its published port and the other containers
at their addresses on the project's own Docker network.
"""

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

from msarch.embedded import free_port
from msarch.storage import Store

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "local" / "compose.sh"


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
    broker_url: str | None = None
    """MSARCH_COMPOSE_BROKER_URL: None for compose.yaml's RabbitMQ; nats://nats:4222 for NATS."""
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
            "COMPOSE_PROFILES": ",".join(self.profiles),
            **({"MSARCH_COMPOSE_BROKER_URL": self.broker_url} if self.broker_url else {}),
        }

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

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
        await self.compose("up")
        self.up_s = asyncio.get_running_loop().time() - started

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

    async def docker(self, *args: str, timeout_s: float = 120) -> str:
        return await run("docker", *args, timeout_s=timeout_s)

    async def store(self) -> Store:
        """The stack's own Redis, at its container's address."""
        address = await self.address(await self.container("redis"))
        return Store.from_url(f"redis://{address}:6379/0")

    async def healthy(self) -> bool:
        """Every running container of the project reports healthy, and so does the gateway."""
        output = await run(
            "docker", "ps", "--filter", f"label=com.docker.compose.project={self.project}",
            "--format", "{{.Names}} {{.Status}}",
        )  # fmt: skip
        lines = output.splitlines()
        if not lines or not all("(healthy)" in line for line in lines):
            return False
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                return (await client.get(self.gateway_url + "/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def logs(self, container: str) -> str:
        return await run("docker", "logs", container)
