"""msarch.logs: repeated errors counted, lines for people, the traffic summary."""

import io
import json
import logging

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from msarch.logs import JsonFormatter, RepeatFilter, TrafficSummary, render, wants_text
from msarch.up import service_printer
from tests.utils.clock import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def captured(clock: Clock) -> tuple[logging.Logger, list[logging.LogRecord], RepeatFilter]:
    records: list[logging.LogRecord] = []
    repeats = RepeatFilter(window_s=30, clock=clock)

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(repeats)
    logger = logging.getLogger(f"test-logs-{id(records)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, records, repeats


def fail(logger: logging.Logger, what: str = "sweeping failed") -> None:
    try:
        raise ConnectionError("Redis is down")
    except ConnectionError:
        logger.exception(what)


def test_a_repeated_error_goes_out_once_with_its_traceback_then_as_a_count(
    captured: tuple[logging.Logger, list[logging.LogRecord], RepeatFilter], clock: Clock
) -> None:
    logger, records, _ = captured
    for second in range(30):  # one a second, as the store's sweep did in an outage
        clock.now = second
        fail(logger)
    assert len(records) == 1
    assert records[0].exc_info is not None
    clock.now = 31
    fail(logger)
    assert len(records) == 2
    assert records[1].getMessage() == "sweeping failed (repeated 29 times in the last 30 s)"
    assert records[1].exc_info is None, "the traceback was shown once"


def test_flush_says_how_often_an_error_repeated_once_its_window_has_ended(
    captured: tuple[logging.Logger, list[logging.LogRecord], RepeatFilter], clock: Clock
) -> None:
    logger, records, repeats = captured
    for second in range(5):
        clock.now = second
        fail(logger)
    repeats.flush(logger)
    assert len(records) == 1, "the window has not ended: nothing to say yet"
    clock.now = 30
    repeats.flush(logger)
    assert [r.getMessage() for r in records[1:]] == [
        "sweeping failed (repeated 4 times in the last 30 s)"
    ]
    repeats.flush(logger)
    assert len(records) == 2, "said once"


def test_different_errors_and_info_lines_are_never_held_back(
    captured: tuple[logging.Logger, list[logging.LogRecord], RepeatFilter],
) -> None:
    logger, records, _ = captured
    fail(logger, "one thing failed")
    fail(logger, "another thing failed")
    for _ in range(3):
        logger.info("started")
        logger.debug("pushed")
    assert [r.getMessage() for r in records] == [
        "one thing failed",
        "another thing failed",
        *["started", "pushed"] * 3,
    ]


def record(msg: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("msarch.store", level, __file__, 1, msg, (), None)
    made.__dict__.update(extra)
    return made


def test_a_line_for_people_has_time_service_level_message_and_fields() -> None:
    entry = json.loads(JsonFormatter("store").format(record("stored", key="k1", event_id="1-0")))
    line = render(entry, colour=False)
    assert line == f"{entry['time'][11:23]} store     INFO    stored  key=k1 event_id=1-0"
    coloured = render({**entry, "level": "ERROR"}, colour=True)
    assert "\x1b[31mERROR" in coloured
    assert "\x1b[34mstore" in coloured
    with_error = render({**entry, "error": "Traceback\n  File x\nValueError"}, colour=False)
    assert with_error.endswith("\n    Traceback\n      File x\n    ValueError")


def test_auto_is_text_on_a_terminal_only() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wants_text("auto", Terminal())
    assert not wants_text("auto", io.StringIO())
    assert wants_text("text", io.StringIO())
    assert not wants_text("json", Terminal())


def test_msarch_up_passes_json_lines_on_unchanged_when_not_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printer = service_printer("auto")  # pytest's stdout is no terminal
    line = json.dumps({"time": "2026-12-01T12:00:00.000Z", "level": "INFO", "msg": "started"})
    printer("store", line)
    printer("store", "Traceback (most recent call last):")
    assert capsys.readouterr().out.splitlines() == [
        line,
        "store    | Traceback (most recent call last):",
    ]
    service_printer("text")("store", line)
    assert capsys.readouterr().out == "12:00:00.000           INFO    started\n"


def test_the_summary_gives_rates_by_channel_and_outcome_p99_and_http_then_nothing() -> None:
    registry = CollectorRegistry()
    consumed = Counter("c", "", ["service", "channel", "outcome"], registry=registry)
    handling = Histogram("h", "", ["service", "channel"], registry=registry)
    http = Counter("r", "", ["service", "route", "status"], registry=registry)
    summary = TrafficSummary("store", consumed, handling, http, period_s=10)
    assert summary.line() is None, "no traffic, no line"
    consumed.labels("store", "event", "ok").inc(380)
    consumed.labels("store", "event", "dead-lettered").inc(2)
    consumed.labels("batch", "batch", "ok").inc(1000)  # another service's: not ours
    for _ in range(99):
        handling.labels("store", "event").observe(0.004)
    handling.labels("store", "event").observe(0.2)
    http.labels("store", "/api/x", "200").inc(50)
    http.labels("store", "/api/x", "503").inc(10)
    http.labels("store", "/health", "200").inc(100)  # probes are not traffic
    assert summary.line() == (
        "last 10 s: event 0.2/s dead-lettered; event 38.0/s ok; handler p99 ≤ 5 ms; "
        "HTTP 6.0/s (2xx 5.0/s, 5xx 1.0/s)"
    )
    assert summary.line() is None, "what was said is not said again"
