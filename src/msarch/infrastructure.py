"""The broker and Redis `msarch up` runs on: the configured ones, or embedded ones started here.

`provide_infrastructure` probes the configured addresses; where nothing answers
at a local address (and MSARCH_EMBEDDED allows it) it starts NATS JetStream or
Redis of its own (msarch.embedded). It prints nothing and never exits: the
`Infrastructure` it returns says what to run with, what it started and what is
wrong, and the CLI tells the user and picks the exit code.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from msarch.embedded import Embedded, answers, free_port, is_local, port_is_free, port_of
from msarch.settings import Settings, redacted

PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Unreachable:
    """A configured server that did not answer, and what the user can do about it."""

    name: str
    """"broker" or "redis"."""
    url: str
    reason: str
    hint: str


@dataclass(frozen=True)
class Started:
    """An embedded server started in place of a configured one that did not answer."""

    setting: str
    """The Settings field it takes the place of: "broker_url" or "redis_url"."""
    replaces: str
    """What was missing: "broker" or "Redis"."""
    configured_url: str
    server: str
    """What was started: "NATS JetStream" or "Redis"."""
    url: str
    data: str
    """Where its data goes, and how durably."""


@dataclass
class Infrastructure:
    """What `msarch up` found and did; usable only with no `unreachable` and no `failure`."""

    settings: Settings
    """The settings to run the services with (the embedded servers' URLs put in)."""
    embedded: Embedded | None = None
    """The servers to stop on exit; None when nothing was started (or nothing is left)."""
    started: list[Started] = field(default_factory=list)
    unreachable: list[Unreachable] = field(default_factory=list)
    failure: str | None = None
    """Why the embedded servers could not be started (those started are stopped again)."""

    @property
    def usable(self) -> bool:
        return not self.unreachable and self.failure is None


def _hints(settings: Settings) -> dict[str, tuple[str, str]]:
    # Behind Sentinel, an embedded Redis would stand in for nothing: the list is not a URL,
    # so it is never taken for a local one.
    redis = (
        (settings.redis_sentinels or "", "start the Sentinels or set MSARCH_REDIS_SENTINELS")
        if settings.sentinels
        else (settings.redis_url, "start redis-server or set MSARCH_REDIS_URL")
    )
    return {
        "broker": (
            settings.broker_url,
            "start RabbitMQ (`rabbitmq-server -detached`) or NATS, or set MSARCH_BROKER_URL",
        ),
        "redis": redis,
    }


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:120] or type(exc).__name__


async def check_infrastructure(settings: Settings) -> dict[str, str]:
    """What cannot be reached ("broker", "redis"), with the reason."""
    from msarch.bus import create_bus
    from msarch.storage import Store

    problems: dict[str, str] = {}
    bus = create_bus(settings, service="runner")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await bus.broker.connect()
    except Exception as exc:
        problems["broker"] = _reason(exc)
    finally:
        with contextlib.suppress(Exception):
            await bus.broker.stop()
    store = Store.from_settings(settings)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await store.ping()
    except Exception as exc:
        problems["redis"] = _reason(exc)
    finally:
        with contextlib.suppress(Exception):
            await store.close()
    return problems


async def provide_infrastructure(settings: Settings) -> Infrastructure:
    """The configured servers when they answer; embedded ones where none answers locally."""
    problems = await check_infrastructure(settings)
    if not problems:
        return Infrastructure(settings)
    hints = _hints(settings)
    unreachable = [
        Unreachable(name, hints[name][0], reason, hints[name][1])
        for name, reason in problems.items()
    ]
    if not settings.embedded or not all(is_local(u.url) for u in unreachable):
        return Infrastructure(settings, unreachable=unreachable)
    return await _start_embedded(settings, set(problems))


async def _start_embedded(settings: Settings, missing: set[str]) -> Infrastructure:
    embedded = Embedded(Path(settings.data_dir))
    started: list[Started] = []
    try:
        if "broker" in missing:
            started.append(await _start_nats(embedded, settings))
        if "redis" in missing:
            started.append(await _start_redis(embedded, settings))
    except (OSError, RuntimeError, TimeoutError) as exc:
        await embedded.stop()
        return Infrastructure(settings, started=started, failure=str(exc))
    updates = {s.setting: s.url for s in started}
    return Infrastructure(settings.model_copy(update=updates), embedded, started)


async def _start_nats(embedded: Embedded, settings: Settings) -> Started:
    # A nats:// URL keeps its port; an amqp:// one says nothing about where NATS would listen.
    wanted = port_of(settings.broker_url, 4222) if settings.broker_url.startswith("nats") else 4222
    url = await embedded.start_nats(wanted if port_is_free(wanted) else free_port())
    data = f"{settings.data_dir}/nats, fsync always"
    return Started("broker_url", "broker", settings.broker_url, "NATS JetStream", url, data)


async def _start_redis(embedded: Embedded, settings: Settings) -> Started:
    wanted = port_of(settings.redis_url, 6379)
    url = await embedded.start_redis(wanted if port_is_free(wanted) else free_port())
    data = f"{settings.data_dir}/redis, AOF fsync always"
    return Started("redis_url", "Redis", settings.redis_url, "Redis", url, data)


OUTAGE_PROBE_S = 1.0
OUTAGE_PROBES = 2
"""Probes in a row that must fail before an outage is reported."""


def _address(url: str, default_port: int) -> tuple[str, int]:
    return urlsplit(url).hostname or "127.0.0.1", port_of(url, default_port)


def _addresses(settings: Settings, name: str) -> list[tuple[str, int]]:
    if name == "redis":
        return settings.sentinels or [_address(settings.redis_url, 6379)]
    default = 4222 if settings.broker_url.startswith("nats") else 5672
    return [_address(url, default) for url in settings.broker_urls]


async def watch_outages(
    settings: Settings, names: Iterable[str], say: Callable[[str], None]
) -> None:
    """Until cancelled: one line when a server `msarch up` did not start stops answering, one
    when it answers again (never a line a second). A broker answers when one of its nodes does."""
    watched = {name: _addresses(settings, name) for name in names}
    shown = {"broker": f"broker at {redacted(settings.broker_url)}", "redis": (
        f"Redis Sentinels at {settings.redis_sentinels}" if settings.sentinels
        else f"Redis at {redacted(settings.redis_url)}"
    )}  # fmt: skip
    failing_since: dict[str, tuple[float, str]] = {}
    failures: dict[str, int] = dict.fromkeys(watched, 0)
    while True:
        for name, addresses in watched.items():
            if any([await answers(host, port) for host, port in addresses]):
                if failures[name] >= OUTAGE_PROBES:
                    since, _ = failing_since[name]
                    say(f"{shown[name]} back after {time.monotonic() - since:.1f} s")
                failures[name] = 0
                continue
            if failures[name] == 0:
                failing_since[name] = (time.monotonic(), time.strftime("%H:%M:%S"))
            failures[name] += 1
            if failures[name] == OUTAGE_PROBES:  # one probe lost on a busy machine is no outage
                say(
                    f"{shown[name]} unreachable since {failing_since[name][1]}; "
                    "services are holding messages until it is back"
                )
        await asyncio.sleep(OUTAGE_PROBE_S)
