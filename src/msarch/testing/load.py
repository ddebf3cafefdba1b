"""Roundtrips under load, every answer recorded; and the checks that none was lost.

One generator for the fault tests (which count what was confirmed, then look for it in Redis)
and the benchmarks (which time it): `concurrency` keep-alive connections, each POSTing as soon
as its previous answer came back, for `count` requests, `duration_s` seconds or `until` an event.
"""

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from msarch.storage import Store
from msarch.testing.http_client import KeepAliveConnection, Response
from msarch.testing.stack import wait_for

__all__ = [
    "Answer",
    "RoundtripLoad",
    "events_once_stored",
    "kv_event_ids",
    "metric",
    "missing_keys",
    "percentile_ms",
    "refusals",
    "roundtrip_body",
]

PATH = "/api/roundtrip"
NO_ANSWER_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)
"""Connection refused or reset, a cut-off or malformed answer (TimeoutError is an OSError)."""


@dataclass(frozen=True)
class Answer:
    started: float
    """time.monotonic() when the request was sent"""
    seconds: float
    status: int
    """HTTP status, or 0 when no answer came (connection error, client timeout)"""
    content_type: str
    reason: str = ""
    """Why a request that was answered was not accepted: the problem's detail up to its first
    colon, which names the part that failed without the particulars after it."""


def refusals(answers: list[Answer]) -> Counter[str]:
    """How many answers were refused for each status and reason."""
    return Counter(f"{a.status} {a.reason}" for a in answers if a.status not in (0, 202))


def default_value(number: int) -> str:
    return f"value-{number}-ü"


def roundtrip_body(key: str, value: str) -> bytes:
    return json.dumps({"key": key, "value": value}).encode()


def percentile_ms(latencies_s: list[float], q: float) -> float:
    if not latencies_s:
        return float("nan")
    ordered = sorted(latencies_s)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


@dataclass
class RoundtripLoad:
    """POSTs /api/roundtrip to `url` (the gateway, or the roundtrip service itself) with
    bounded concurrency; remembers every answer and what was confirmed."""

    url: str
    prefix: str
    """Keys are f"{prefix}-{number}"."""
    concurrency: int = 16
    timeout_s: float = 30.0
    """Per request; one that takes longer counts as no answer (status 0)."""
    value: Callable[[int], str] = default_value
    confirmed: dict[str, tuple[str, str]] = field(default_factory=dict)
    """id -> (key, value) of every request answered 202"""
    answers: list[Answer] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    """Why requests got no answer, by exception name."""
    sent: int = 0
    seconds: float = 0.0
    """How long the last run() took."""

    @property
    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.answers)

    @property
    def accepted(self) -> int:
        return len(self.confirmed)

    @property
    def per_s(self) -> float:
        """202 answers per second of the last run()."""
        return self.accepted / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float, status: int = 202) -> float:
        return percentile_ms([a.seconds for a in self.answers if a.status == status], q)

    def during(self, start: float, end: float) -> list[Answer]:
        """Answers to requests sent in [start, end) (time.monotonic())."""
        return [a for a in self.answers if start <= a.started < end]

    async def run(
        self,
        count: int | None = None,
        until: asyncio.Event | None = None,
        duration_s: float | None = None,
    ) -> None:
        """Send `count` roundtrips, or for `duration_s`, or until `until` is set."""
        deadline = None if duration_s is None else time.monotonic() + duration_s

        def more() -> bool:
            return (
                (count is None or self.sent < count)
                and not (until is not None and until.is_set())
                and (deadline is None or time.monotonic() < deadline)
            )

        started = time.monotonic()
        await asyncio.gather(*(self._worker(more) for _ in range(self.concurrency)))
        self.seconds = time.monotonic() - started

    async def _worker(self, more: Callable[[], bool]) -> None:
        target = urlsplit(self.url)
        connection = KeepAliveConnection(target.hostname or "127.0.0.1", target.port or 80)
        try:
            while more():
                number = self.sent
                self.sent += 1
                key, value = f"{self.prefix}-{number}", self.value(number)
                body = roundtrip_body(key, value)
                started = time.monotonic()
                response: Response | None = None
                try:
                    async with asyncio.timeout(self.timeout_s):
                        response = await connection.post_json(PATH, body)
                except NO_ANSWER_ERRORS as exc:
                    self.errors[type(exc).__name__] += 1
                    await connection.close()
                status = response.status if response is not None else 0
                content_type = response.headers.get("content-type", "") if response else ""
                reason = _reason(response) if response is not None and status != 202 else ""
                self.answers.append(
                    Answer(started, time.monotonic() - started, status, content_type, reason)
                )
                if response is not None and status == 202:
                    self.confirmed[json.loads(response.body)["id"]] = (key, value)
                else:
                    await asyncio.sleep(0.05)  # as a client honouring Retry-After would, briefly
        finally:
            await connection.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Roundtrips sent in the background while inside; on the way out the load stops
        and the requests still in flight get their answers."""
        stop = asyncio.Event()
        sending = asyncio.create_task(self.run(until=stop))
        try:
            yield
        finally:
            stop.set()
            await sending


def _reason(response: Response) -> str:
    """What a problem+json answer says went wrong, without its particulars."""
    try:
        detail = str(json.loads(response.body).get("detail") or "")
    except (ValueError, AttributeError):
        return "(no problem+json)"
    return detail.partition(":")[0][:100]


async def missing_keys(store: Store, confirmed: dict[str, tuple[str, str]]) -> list[str]:
    """Keys answered 202 whose value is not (or not exactly) in Redis."""
    expected = list(confirmed.values())
    missing: list[str] = []
    for start in range(0, len(expected), 1000):
        chunk = expected[start : start + 1000]
        values = await store.key_values.get_many([k for k, _ in chunk])
        missing += [k for (k, v), got in zip(chunk, values, strict=True) if got != v]
    return missing


async def kv_event_ids(store: Store) -> Counter[str]:
    """How many KeyValueStored events the log has per message id."""
    counts: Counter[str] = Counter()
    after: str | None = None
    while page := await store.read_events(after, 1000):
        counts.update(e.message_id for e in page if e.type.value == "KeyValueStored")
        after = page[-1].id
    return counts


async def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples that have these labels, from url/metrics."""
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"{url}/metrics")).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def events_once_stored(
    store: Store, confirmed: dict[str, tuple[str, str]], timeout_s: float = 120.0
) -> dict[str, int]:
    """Wait until every confirmed key/value is in Redis; then how many KeyValueStored events
    each confirmed message id has in the log (a missing one has none)."""

    confirmed = dict(confirmed)  # a load that still runs adds to it: these, as of now

    async def all_stored() -> bool:
        return not await missing_keys(store, confirmed)

    await wait_for(all_stored, timeout_s, 0.5)
    events = await kv_event_ids(store)
    return {message_id: events[message_id] for message_id in confirmed if message_id in events}
