"""The machine and server versions the figures were measured on."""

import asyncio
import contextlib
import os
import platform
import subprocess
from typing import Any

import aio_pika
import nats
import redis.asyncio as aioredis

from msarch.testing.isolation import NATS_URL, RABBIT_URL, TEST_REDIS_URL


def _free_g() -> str:
    try:
        lines = subprocess.run(
            ["free", "-g"], capture_output=True, text=True, check=True, timeout=5
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    mem = next((line.split() for line in lines if line.startswith("Mem:")), [])
    return f"{mem[1]} GiB total, {mem[6]} GiB available" if len(mem) > 6 else "unknown"


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def _rabbit_version() -> str:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            connection = await aio_pika.connect(RABBIT_URL)
            async with connection:
                transport = connection.transport
                if transport is None:
                    return "unknown"
                properties = transport.connection.server_properties
                return str(properties.get("version", "unknown"))
    return "unreachable"


async def _nats_version() -> str:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            connection = await nats.connect(NATS_URL)
            try:
                version = str(connection.connected_server_version)
                return version.strip("<>").removeprefix("nats server v")
            finally:
                await connection.close()
    return "unreachable"


async def _redis_version() -> str:
    client = aioredis.Redis.from_url(TEST_REDIS_URL)
    try:
        async with asyncio.timeout(5):
            info = await client.info("server")
            return str(info.get("redis_version", "unknown"))
    except Exception:
        return "unreachable"
    finally:
        await client.aclose()


async def describe_machine() -> dict[str, Any]:
    rabbit, nats_version, redis_version = await asyncio.gather(
        _rabbit_version(), _nats_version(), _redis_version()
    )
    return {
        "nproc": os.cpu_count(),
        # 1, 5 and 15-minute load averages when the run started (each benchmark may add its own)
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu": _cpu_model(),
        "memory": _free_g(),
        "python": platform.python_version(),
        "rabbitmq": rabbit,
        "nats_server": nats_version,
        "redis": redis_version,
    }
