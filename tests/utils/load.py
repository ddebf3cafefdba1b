"""Load for fault tests: roundtrips streamed through the gateway, every answer recorded."""

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from msarch.storage import Store
from tests.utils.stack import wait_for


@dataclass(frozen=True)
class Answer:
    started: float
    """time.monotonic() when the request was sent"""
    seconds: float
    status: int
    """HTTP status, or 0 when no answer came (connection error, client timeout)"""
    content_type: str


@dataclass
class RoundtripLoad:
    """POSTs /api/roundtrip with bounded concurrency; remembers what was confirmed."""

    gateway_url: str
    prefix: str
    concurrency: int = 16
    timeout_s: float = 30.0
    confirmed: dict[str, tuple[str, str]] = field(default_factory=dict)
    """id -> (key, value) of every request answered 202"""
    answers: list[Answer] = field(default_factory=list)
    sent: int = 0

    @property
    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.answers)

    async def run(self, count: int | None = None, until: asyncio.Event | None = None) -> None:
        """Send `count` roundtrips, or keep sending until `until` is set."""
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            await asyncio.gather(
                *(self._worker(client, count, until) for _ in range(self.concurrency))
            )

    async def _worker(
        self, client: httpx.AsyncClient, count: int | None, until: asyncio.Event | None
    ) -> None:
        while (count is None or self.sent < count) and not (until and until.is_set()):
            i = self.sent
            self.sent += 1
            key, value = f"{self.prefix}-{i}", f"value-{i}-ü"
            started = time.monotonic()
            try:
                response = await client.post(
                    f"{self.gateway_url}/api/roundtrip", json={"key": key, "value": value}
                )
                status, content_type = response.status_code, response.headers.get("content-type")
            except httpx.HTTPError:
                status, content_type = 0, None
                response = None
            self.answers.append(
                Answer(started, time.monotonic() - started, status, content_type or "")
            )
            if response is not None and status == 202:
                self.confirmed[response.json()["id"]] = (key, value)
            elif status != 202:
                await asyncio.sleep(0.05)  # as a client honouring Retry-After would, briefly

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

    def during(self, start: float, end: float) -> list[Answer]:
        """Answers to requests sent in [start, end) (time.monotonic())."""
        return [a for a in self.answers if start <= a.started < end]


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

    async def all_stored() -> bool:
        return not await missing_keys(store, confirmed)

    await wait_for(all_stored, timeout_s, 0.5)
    events = await kv_event_ids(store)
    return {message_id: events[message_id] for message_id in confirmed if message_id in events}
