"""What the live view shows: every instance's /health and /metrics, read into one snapshot.

The pure part turns an instance's Prometheus text into per-channel figures (`read_metrics`),
two readings of one instance into rates and handler-latency quantiles (`channel_figures`).
`LiveView` asks every instance discovery lists, all at once, and keeps each instance's last
reading to difference the next one against. It fetches only when asked (GET /api/live, or
each second while an SSE client listens): nobody watching costs the gateway nothing.
"""

import asyncio
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from apps.gateway.upstreams import Upstreams
from msarch.channels import ALL
from msarch.settings import SERVICES

ASK_TIMEOUT_S = 0.8
"""Under the stream's second: an instance slower than this is shown down."""
CACHE_S = 0.9
"""Several viewers in one second share one round of requests."""
CHANNELS = sorted((channel.name for channel in ALL), key=len, reverse=True)

Buckets = list[tuple[float, float]]
"""A histogram's cumulative buckets: (upper bound, count), the +Inf one last."""


@dataclass
class Metrics:
    """One instance's series, by channel (its plain name, the namespace taken off)."""

    consumed: dict[str, float] = field(default_factory=dict)
    published: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, Buckets] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)
    dead_letters: dict[str, float] = field(default_factory=dict)


def channel_of(label: str) -> str:
    """The channel a label names: `msarch-t1.event` → `event` (the longest name it ends with)."""
    for name in CHANNELS:
        if label == name or label.endswith(("." + name, "_" + name, "-" + name, ":" + name)):
            return name
    return label


def read_metrics(text: str) -> Metrics:
    """The msarch series of a /metrics answer, summed by channel (consumed: every outcome)."""
    metrics = Metrics()
    buckets: defaultdict[str, dict[float, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            channel = channel_of(sample.labels.get("channel", ""))
            if sample.name == "msarch_messages_consumed_total":
                metrics.consumed[channel] = metrics.consumed.get(channel, 0.0) + sample.value
            elif sample.name == "msarch_messages_published_total":
                metrics.published[channel] = metrics.published.get(channel, 0.0) + sample.value
            elif sample.name == "msarch_message_handling_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[channel][bound] = buckets[channel].get(bound, 0.0) + sample.value
            elif sample.name == "msarch_consumer_lag":
                metrics.lag[channel] = sample.value
            elif sample.name == "msarch_dead_letters":
                metrics.dead_letters[channel] = sample.value
    metrics.buckets = {channel: sorted(found.items()) for channel, found in buckets.items()}
    return metrics


def quantile(q: float, buckets: Buckets) -> float | None:
    """The q-quantile of cumulative buckets, interpolated within its bucket as Prometheus's
    histogram_quantile does; None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the largest finite bound: that bound is all one knows
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def since(current: Buckets, previous: Buckets | None) -> Buckets:
    """The observations between two readings (all of them after a restart reset the counts)."""
    if not previous:
        return current
    before = dict(previous)
    delta = [(bound, count - before.get(bound, 0.0)) for bound, count in current]
    return current if any(count < 0 for _, count in delta) else delta


def rate(current: float, previous: float | None, seconds: float) -> float:
    """Per second between two counter readings; a reset (a restart) counts from zero."""
    if previous is None or seconds <= 0:
        return 0.0
    grown = current - previous if current >= previous else current
    return grown / seconds


def channel_figures(
    current: Metrics, previous: Metrics | None, seconds: float
) -> dict[str, dict[str, float | None]]:
    """Per channel: messages/s in and out, handler p50/p99 (ms) over the interval (over the
    instance's life when nothing was handled in it), lag and dead letters."""
    before = previous or Metrics()
    names = {*current.consumed, *current.published, *current.lag, *current.dead_letters}
    figures: dict[str, dict[str, float | None]] = {}
    for name in sorted(names):
        buckets = current.buckets.get(name, [])
        recent = since(buckets, before.buckets.get(name) if previous else None)
        window = recent if recent and recent[-1][1] > 0 else buckets
        p50, p99 = quantile(0.5, window), quantile(0.99, window)
        consumed = _of(before.consumed, name, previous)
        published = _of(before.published, name, previous)
        figures[name] = {
            "in_per_s": round(rate(current.consumed.get(name, 0.0), consumed, seconds), 2),
            "out_per_s": round(rate(current.published.get(name, 0.0), published, seconds), 2),
            "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p99_ms": None if p99 is None else round(p99 * 1000, 2),
            "lag": current.lag.get(name),
            "dead_letters": current.dead_letters.get(name),
        }
    return figures


def _of(series: dict[str, float], name: str, previous: Metrics | None) -> float | None:
    """A previous reading's value; None when there was no previous reading at all."""
    return None if previous is None else series.get(name, 0.0)


@dataclass
class Reading:
    """An instance's metrics at a moment (monotonic seconds)."""

    metrics: Metrics
    at: float


class LiveView:
    """Snapshots of every instance, each instance's last reading kept for the next rates."""

    def __init__(self) -> None:
        self._readings: dict[str, Reading] = {}
        self._last: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def snapshot(self, client: aiohttp.ClientSession, upstreams: Upstreams) -> dict[str, Any]:
        """The current snapshot: a fresh one, or the one taken less than CACHE_S ago."""
        async with self._lock:
            if self._last and time.monotonic() - self._last[0] < CACHE_S:
                return self._last[1]
            taken = await self._take(client, upstreams)
            self._last = (time.monotonic(), taken)
            return taken

    async def _take(self, client: aiohttp.ClientSession, upstreams: Upstreams) -> dict[str, Any]:
        services = [s for s in SERVICES if s != "gateway"]
        asked = [(s, url) for s in services for url in dict.fromkeys(upstreams.instances(s))]
        found = await asyncio.gather(*(self._instance(client, url) for _, url in asked))
        by_service: dict[str, list[dict[str, Any]]] = {s: [] for s in services}
        for (service, _), instance in zip(asked, found, strict=True):
            by_service[service].append(instance)
        self._forget_all_but({url for _, url in asked})
        instances = [i for listed in by_service.values() for i in listed]
        return {
            "at": time.time(),
            "services": {
                "gateway": {"instances": [{"url": "this gateway", "state": "up", "channels": {}}]},
                **{service: {"instances": listed} for service, listed in by_service.items()},
            },
            "channels": _totals(instances),
            "infrastructure": {
                "broker": _agreed(instances, "broker"),
                "redis": _agreed(instances, "redis"),
                "consul": upstreams.discovery_state(),
            },
        }

    async def _instance(self, client: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        """One instance: up (healthy), unhealthy (answers, broker or Redis not usable) or
        down (no answer in time)."""
        try:
            health, text = await asyncio.gather(
                _get(client, url + "/health"), _get(client, url + "/metrics")
            )
        except (aiohttp.ClientError, TimeoutError, ValueError):
            self._readings.pop(url, None)
            return {"url": url, "state": "down", "channels": {}}
        state = _json(health[1])
        now = time.monotonic()
        metrics = metrics_of(*text)
        previous = self._readings.get(url)
        self._readings[url] = Reading(metrics, now)
        seconds = now - previous.at if previous else 0.0
        return {
            "url": url,
            "state": "up" if health[0] == 200 else "unhealthy",
            "broker": state.get("broker"),
            "redis": state.get("redis"),
            "channels": channel_figures(metrics, previous.metrics if previous else None, seconds),
        }

    def _forget_all_but(self, urls: set[str]) -> None:
        for url in [url for url in self._readings if url not in urls]:
            del self._readings[url]


async def _get(client: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    """Status and text of a GET, within ASK_TIMEOUT_S."""
    limit = aiohttp.ClientTimeout(total=ASK_TIMEOUT_S)
    async with client.get(url, timeout=limit) as answer:
        return answer.status, await answer.text()


def metrics_of(status: int, text: str) -> Metrics:
    """An instance's metrics; none when its /metrics did not answer with Prometheus text."""
    if status != 200:
        return Metrics()
    try:
        return read_metrics(text)
    except (ValueError, KeyError):
        return Metrics()


def _json(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _totals(instances: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per channel over every instance: messages/s in and out, lag, dead letters."""
    totals: defaultdict[str, dict[str, float]] = defaultdict(
        lambda: {"in_per_s": 0.0, "out_per_s": 0.0, "lag": 0.0, "dead_letters": 0.0}
    )
    for instance in instances:
        for name, figures in instance["channels"].items():
            for key in totals[name]:
                value = figures.get(key)
                if value is not None:
                    totals[name][key] = round(totals[name][key] + value, 2)
    return dict(totals)


def _agreed(instances: list[dict[str, Any]], part: str) -> str:
    """The broker's or Redis's state as the instances that answered see it."""
    seen = [i[part] for i in instances if i.get(part) is not None]
    if not seen:
        return "unknown"
    troubled = [str(s) for s in seen if s != "ok"]
    return troubled[0] if troubled else "ok"
