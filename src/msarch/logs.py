"""Logs for people and for machines.

Every service logs through `configure_logging`: JSON lines (one object a line, for containers
and log shippers) or, on a terminal, readable coloured lines (MSARCH_LOG_FORMAT=auto|json|text).
At INFO a service says what changes (started, connected, an outage begun or ended, a batch
finished or failed) and, every 10 s while it has traffic, one `TrafficSummary` line; what
happens to each message is DEBUG (MSARCH_LOG_LEVEL=DEBUG brings it back). A warning or error
that repeats is logged once with its traceback and then counted (`RepeatFilter`:
"… (repeated 37 times in the last 30 s)").
"""

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from prometheus_client import Counter, Histogram

from msarch.observability import HTTP_REQUESTS, current_trace_id, request_id

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

SERVICE_COLOURS = {"gateway": 36, "roundtrip": 32, "batch": 33, "websocket": 35, "store": 34}
LEVEL_COLOURS = {"DEBUG": 2, "WARNING": 33, "ERROR": 31, "CRITICAL": 31}
REPEAT_WINDOW_S = 30.0


def entry_of(record: logging.LogRecord, service: str) -> dict[str, Any]:
    """What a log line says, as the JSON line holds it."""
    entry: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname,
        "service": service,
        "logger": record.name,
        "msg": record.getMessage(),
    }
    if (rid := request_id.get()) is not None:
        entry["request_id"] = rid
    if (trace_id := current_trace_id()) is not None:
        entry["trace_id"] = trace_id
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_") and value not in (None, ""):
            entry[key] = value
    return entry


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        """`entry_of` the record, its traceback (if any) as "error"."""
        entry = entry_of(record, self.service)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return entry

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.entry(record), default=str, ensure_ascii=False)


def render(entry: Mapping[str, Any], colour: bool) -> str:
    """A JSON log entry as a person reads it: time, service, level, message, the other fields
    (a traceback below, indented)."""
    clock = str(entry.get("time", ""))[11:23] or time.strftime("%H:%M:%S")
    service, level = str(entry.get("service", "")), str(entry.get("level", ""))
    fields = " ".join(
        f"{k}={v}"
        for k, v in entry.items()
        if k not in ("time", "service", "level", "logger", "msg", "error")
    )
    text = f"{entry.get('msg', '')}  {fields}".rstrip()
    error = "".join(f"\n    {line}" for line in str(entry.get("error", "")).splitlines())
    if not colour:
        return f"{clock} {service:<9} {level:<7} {text}{error}"
    tint, shade = SERVICE_COLOURS.get(service, 37), LEVEL_COLOURS.get(level, 0)
    shown_level = f"\x1b[{shade}m{level:<7}\x1b[0m" if shade else f"{level:<7}"
    return f"\x1b[2m{clock}\x1b[0m \x1b[{tint}m{service:<9}\x1b[0m {shown_level} {text}{error}"


class TextFormatter(JsonFormatter):
    """The same entry as the JSON line, rendered for people."""

    def __init__(self, service: str, colour: bool) -> None:
        super().__init__(service)
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        return render(self.entry(record), self.colour)


def wants_text(log_format: str, stream: TextIO) -> bool:
    """MSARCH_LOG_FORMAT: "text", "json", or "auto" (text on a terminal, JSON otherwise)."""
    if log_format == "auto":
        return stream.isatty()
    return log_format == "text"


@dataclass
class RepeatFilter(logging.Filter):
    """The first of a repeated warning or error goes out (with its traceback); the same one
    again (same logger, message template and exception type) within `window_s` is counted,
    and the count goes out with the next one after the window, or from `flush()`."""

    window_s: float = REPEAT_WINDOW_S
    clock: Callable[[], float] = time.monotonic
    _seen: dict[tuple[str, str, object], list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = record.exc_info[0] if record.exc_info else None
        key = (record.name, str(record.msg), kind)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            seen[1] += 1
            seen[2] = record
            return False
        self._seen[key] = [now, 0, None]
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} (repeated {seen[1]} times in the last {self.window_s:g} s)"
            record.exc_info, record.exc_text = None, None  # its traceback was shown once
        return True

    def flush(self, logger: logging.Logger) -> None:
        """Say how often what was held back repeated, for windows that have ended."""
        now = self.clock()
        for key, (started, repeats, last) in list(self._seen.items()):
            if now - started >= self.window_s:
                del self._seen[key]
                if repeats and last is not None:
                    logger.log(
                        last.levelno,
                        "%s (repeated %d times in the last %g s)",
                        last.getMessage(),
                        repeats,
                        self.window_s,
                        extra={"repeated": repeats, "logger_of": last.name},
                    )


REPEATS = RepeatFilter()
"""The one filter of this process's log handler (the summary flushes it)."""


def configure_logging(service: str, level: str = "INFO", log_format: str = "auto") -> None:
    handler = logging.StreamHandler(sys.stdout)
    if wants_text(log_format, sys.stdout):
        handler.setFormatter(TextFormatter(service, colour=sys.stdout.isatty()))
    else:
        handler.setFormatter(JsonFormatter(service))
    handler.addFilter(REPEATS)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # DEBUG is msarch's own per-message lines; the libraries' debug chatter stays out.
    wanted = logging.getLevelName(level.upper())
    root.setLevel(max(wanted, logging.INFO))
    logging.getLogger("msarch").setLevel(wanted)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


Totals = dict[tuple[str, ...], float]


def _samples(metric: Counter | Histogram, service: str, suffix: str) -> list[dict[str, str]]:
    return [
        {**sample.labels, "_value": str(sample.value)}
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith(suffix) and sample.labels.get("service") == service
    ]


def consumed_totals(metric: Counter, service: str) -> Totals:
    """Messages handled so far, by (channel, outcome)."""
    return {
        (s["channel"], s["outcome"]): float(s["_value"])
        for s in _samples(metric, service, "_total")
    }


def bucket_totals(metric: Histogram, service: str) -> Totals:
    """Handler times so far, as cumulative buckets by upper bound (every channel together)."""
    found: Totals = {}
    for s in _samples(metric, service, "_bucket"):
        found[(s["le"],)] = found.get((s["le"],), 0.0) + float(s["_value"])
    return found


def http_totals(metric: Counter, service: str) -> Totals:
    """HTTP answers so far by status class, /health and /metrics (the probes) left out."""
    found: Totals = {}
    for s in _samples(metric, service, "_total"):
        if s.get("route") not in ("/health", "/metrics"):
            key = (f"{s.get('status', '?')[:1]}xx",)
            found[key] = found.get(key, 0.0) + float(s["_value"])
    return found


def p99_ms(buckets: Totals) -> str:
    """The upper bound of the bucket the 99th percentile falls in (buckets are cumulative)."""
    ordered = sorted((float(le), n) for (le,), n in buckets.items())
    total = ordered[-1][1] if ordered else 0.0
    for le, n in ordered:
        if n >= 0.99 * total:
            return "∞" if le == float("inf") else f"{le * 1000:g} ms"
    return "?"


@dataclass
class TrafficSummary:
    """One INFO line per period while there is traffic: messages per second by channel and
    outcome, the handlers' p99 (as the histogram bucket it falls in), HTTP answers per second
    by status class. `line()` gives what happened since its last call."""

    service: str
    consumed: Counter
    handling: Histogram
    http: Counter
    period_s: float = 10.0
    _last: dict[str, Totals] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._last = self._now()

    def _now(self) -> dict[str, Totals]:
        return {
            "consumed": consumed_totals(self.consumed, self.service),
            "handling": bucket_totals(self.handling, self.service),
            "http": http_totals(self.http, self.service),
        }

    def line(self) -> str | None:
        now, last = self._now(), self._last
        self._last = now

        def grown(kind: str) -> Totals:
            before = last.get(kind, {})
            return {
                k: v - before.get(k, 0.0) for k, v in now[kind].items() if v > before.get(k, 0.0)
            }

        consumed, buckets, http = grown("consumed"), grown("handling"), grown("http")
        per_s = self.period_s
        parts = [
            f"{ch} {n / per_s:.1f}/s {outcome}" for (ch, outcome), n in sorted(consumed.items())
        ]
        if consumed and buckets:
            parts.append(f"handler p99 ≤ {p99_ms(buckets)}")
        if http:
            statuses = ", ".join(f"{s} {n / per_s:.1f}/s" for (s,), n in sorted(http.items()))
            parts.append(f"HTTP {sum(http.values()) / per_s:.1f}/s ({statuses})")
        return f"last {per_s:g} s: " + "; ".join(parts) if parts else None


@contextlib.asynccontextmanager
async def summarised(service: str, period_s: float = 10.0) -> AsyncIterator[None]:
    """While inside: every `period_s`, the traffic summary (when there was traffic) and the
    counts of repeated warnings held back."""
    # Imported here: `msarch up` renders log lines with this module and needs no broker client.
    from msarch.bus.consume import CONSUMED, HANDLING

    log = logging.getLogger(f"msarch.{service}")
    summary = TrafficSummary(service, CONSUMED, HANDLING, HTTP_REQUESTS, period_s)

    async def tick() -> None:
        while True:
            await asyncio.sleep(period_s)
            if (line := summary.line()) is not None:
                log.info(line)
            REPEATS.flush(log)

    ticking = asyncio.create_task(tick(), name=f"{service}:log-summary")
    try:
        yield
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
