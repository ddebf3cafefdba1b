"""A private stack for one benchmark run, from the test harness (msarch.testing).

Namespaces start with "test-bench-", so the harness's clean-up (which only deletes "test-"
namespaces) removes every Redis key, queue and stream of the run, and nothing else, on any
exit, Ctrl-C and errors included.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from msarch.settings import Settings
from msarch.testing.isolation import BACKENDS, isolated_settings, new_namespace
from msarch.testing.stack import Stack, running_stack

__all__ = ["BACKENDS", "bench_settings", "bench_stack"]

# Long enough for a 1,000,000-item batch at ~1k items/s; the gateway adds upstream_timeout_s.
BATCH_TIMEOUT_S = 3600.0
STOP_TIMEOUT_S = 30.0
NAMESPACE_PREFIX = "test-bench-"
LOG_LEVEL = "WARNING"


def bench_settings(backend: str) -> Settings:
    """Settings of a run without services (the publish benchmark's own bus)."""
    return isolated_settings(
        backend,
        namespace=new_namespace(NAMESPACE_PREFIX),
        batch_timeout_s=BATCH_TIMEOUT_S,
        log_level=LOG_LEVEL,
    )


@asynccontextmanager
async def bench_stack(backend: str, **overrides: Any) -> AsyncIterator[Stack]:
    """The five services on free loopback ports, stopped and deleted on any exit;
    `overrides` are running_stack's (a printer, Settings fields)."""
    async with running_stack(
        backend,
        **{
            "namespace": new_namespace(NAMESPACE_PREFIX),
            "stop_timeout_s": STOP_TIMEOUT_S,
            "batch_timeout_s": BATCH_TIMEOUT_S,
            "log_level": LOG_LEVEL,
            **overrides,
        },
    ) as stack:
        if stack.settings.host != "127.0.0.1":
            raise RuntimeError("benchmarks run on loopback only")
        yield stack
