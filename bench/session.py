"""A private stack for one benchmark run: own namespace, own ports, cleaned up on any exit.

Namespaces start with "test-bench-" so that tests.utils.infra.delete_namespace
(which only deletes "test-" namespaces) removes every Redis key, queue and
stream of the run, and nothing else.
"""

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from uuid import uuid4

from msarch.settings import SERVICES, Settings
from msarch.supervision import ServiceProcess
from tests.utils.infra import BROKERS, delete_namespace, isolated_settings
from tests.utils.stack import Stack

BACKENDS = tuple(BROKERS)
"""rabbit, nats"""

# Long enough for a 1,000,000-item batch at ~1k items/s; the gateway adds upstream_timeout_s.
BATCH_TIMEOUT_S = 3600.0
STOP_TIMEOUT_S = 30.0
RESERVED_PORTS = range(8000, 8005)
"""The default ports of a developer's `just up`: never used by a benchmark."""

_started: set[int] = set()
"""Pids of every service process a bench run started, for the last-resort kill at exit."""


def new_bench_namespace() -> str:
    return f"test-bench-{uuid4().hex[:10]}-"


def bench_settings(backend: str, namespace: str | None = None) -> Settings:
    return isolated_settings(
        namespace or new_bench_namespace(),
        broker_url=BROKERS[backend],
        batch_timeout_s=BATCH_TIMEOUT_S,
        log_level="WARNING",
    )


@contextlib.asynccontextmanager
async def namespace_cleanup(namespace: str) -> AsyncIterator[str]:
    """Delete the namespace afterwards, even when cancelled (Ctrl-C) or failing."""
    try:
        yield namespace
    finally:
        await asyncio.shield(_delete_quietly(namespace))


async def _delete_quietly(namespace: str) -> None:
    try:
        async with asyncio.timeout(120):
            await delete_namespace(namespace)
    except Exception as exc:  # cleanup must not hide the benchmark's own error
        print(f"bench: could not delete namespace {namespace}: {exc!r}")


@contextlib.asynccontextmanager
async def running_stack(backend: str) -> AsyncIterator[Stack]:
    """The five services on free loopback ports, stopped and deleted on any exit."""
    settings = bench_settings(backend)
    assert settings.host == "127.0.0.1", "benchmarks run on loopback only"
    taken = {settings.port_of(s) for s in SERVICES} & set(RESERVED_PORTS)
    assert not taken, f"ports {taken} belong to `just up`, not to benchmarks"
    stack = Stack(settings)
    async with namespace_cleanup(settings.namespace):
        try:
            await stack.start()
            _started.update(pid_of(p) for p in stack.processes.values())
            yield stack
        finally:
            await asyncio.shield(_stop_quietly(stack))


async def _stop_quietly(stack: Stack) -> None:
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S + 15):
            await asyncio.gather(
                *(p.stop(STOP_TIMEOUT_S) for p in stack.processes.values() if p.running)
            )
    except Exception as exc:
        print(f"bench: stopping the stack failed ({exc!r}); killing what is left")
    for process in stack.processes.values():
        if process.running:
            await process.kill()
        if process.process is not None:
            _started.discard(process.process.pid)


def pid_of(process: ServiceProcess) -> int:
    assert process.process is not None, f"{process.service} was not started"
    return process.process.pid


def kill_leftovers() -> None:
    """At interpreter exit: SIGKILL any service process a crashed run left behind."""
    for pid in list(_started):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _started.clear()
