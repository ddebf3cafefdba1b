"""`msarch up`, the command's side: every line it prints and the exit code it ends with.

The work is done by msarch.infrastructure (the broker and Redis, found or
started) and msarch.supervision (the services as processes), which print
nothing; this module tells the user what they did. Kept out of cli.py, which
holds the commands that talk to a running stack.
"""

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable

from msarch.infrastructure import Infrastructure, provide_infrastructure, watch_outages
from msarch.logs import SERVICE_COLOURS, render, wants_text
from msarch.settings import Settings, redacted
from msarch.supervision import Supervisor, stop_requested


def service_printer(log_format: str) -> Callable[[str, str], None]:
    """How a service's lines reach the terminal: its JSON lines as they are when the output is
    not a terminal (or MSARCH_LOG_FORMAT=json), else as readable coloured lines; anything
    else it prints (a crash before logging is set up) with its name in front."""
    colour = sys.stdout.isatty()
    as_text = wants_text(log_format, sys.stdout)

    def printer(service: str, line: str) -> None:
        entry = None
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
        if isinstance(entry, dict):
            print(render(entry, colour) if as_text else line, flush=True)
            return
        tint = SERVICE_COLOURS.get(service, 37)
        prefix = f"\x1b[{tint}m{service:<9}|\x1b[0m" if colour else f"{service:<9}|"
        print(f"{prefix} {line}", flush=True)

    return printer


def banner(gateway: str) -> str:
    ws = gateway.replace("http://", "ws://", 1)
    return (
        "\nmsarch is up:\n"
        f"  web client  {gateway}/\n"
        f"  API         {gateway}/api/roundtrip, {gateway}/api/batch\n"
        f"  websocket   {ws}/ws\n"
        f"  docs        {gateway}/docs\n"
        f"  health      {gateway}/health\n"
        "Ctrl-C stops everything.\n"
    )


def report(infrastructure: Infrastructure) -> None:
    """One line for each embedded server started, each server unreachable, and a failure."""
    for started in infrastructure.started:
        print(
            f"msarch: no {started.replaces} at {redacted(started.configured_url)}; started "
            f"{started.server} at {started.url} (data in {started.data})",
            flush=True,
        )
    for problem in infrastructure.unreachable:
        print(
            f"msarch: cannot reach {problem.name} at {redacted(problem.url)} "
            f"({problem.reason}): {problem.hint}",
            file=sys.stderr,
        )
    if infrastructure.failure is not None:
        print(
            f"msarch: could not start embedded infrastructure: {infrastructure.failure}",
            file=sys.stderr,
        )


async def run(settings: Settings) -> int:
    """The whole stack until Ctrl-C or SIGTERM: 0 after a clean stop, 1 if it cannot run."""
    infrastructure = await provide_infrastructure(settings)
    report(infrastructure)
    if not infrastructure.usable:
        return 1
    settings = infrastructure.settings
    print(
        f"msarch: using broker {redacted(settings.broker_url)} "
        f"and Redis {redacted(settings.redis_url)}",
        flush=True,
    )
    # What `msarch up` started it keeps running; what it did not, it only watches and reports.
    embedded = infrastructure.embedded
    ours = {"broker" if s.setting == "broker_url" else "redis" for s in infrastructure.started}
    watchers = [asyncio.create_task(watch_outages(settings, {"broker", "redis"} - ours, say))]
    if embedded is not None:
        watchers.append(asyncio.create_task(embedded.supervise(say)))
    try:
        return await _run_services(settings)
    finally:
        if embedded is not None:
            await embedded.stop()
            print("msarch: embedded infrastructure stopped", flush=True)
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


def say(line: str) -> None:
    print(f"msarch: {line}", flush=True)


async def _run_services(settings: Settings) -> int:
    supervisor = Supervisor(settings, printer=service_printer(settings.log_format))
    stopping = stop_requested()  # before the start: Ctrl-C while starting stops once up
    try:
        await supervisor.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"msarch: the stack did not come up: {exc}", file=sys.stderr)
        await supervisor.stop()
        return 1
    print(banner(settings.url_of("gateway")), flush=True)
    watcher = asyncio.create_task(supervisor.supervise())
    await stopping.wait()
    print("msarch: stopping (in-flight messages finish first)...", flush=True)
    await supervisor.stop()
    await watcher
    print("msarch: stopped", flush=True)
    return 0
