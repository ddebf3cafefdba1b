"""The live view's pure part: /metrics text read by channel, rates, handler-latency quantiles,
and a gateway whose instances are all down still answering GET /api/live."""

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from apps.gateway.architecture import (
    Metrics,
    channel_figures,
    channel_of,
    metrics_of,
    quantile,
    rate,
    read_metrics,
    since,
)
from msarch.settings import SERVICES


def metrics_text(consumed: int, published: int, handled: list[float]) -> str:
    """What a store instance's /metrics says after these counts and handler times."""
    registry = CollectorRegistry()
    labels = ["service", "channel"]
    counted = Counter("msarch_messages_consumed", "", [*labels, "outcome"], registry=registry)
    counted.labels("store", "msarch-t1.event", "ok").inc(consumed - 1)
    counted.labels("store", "msarch-t1.event", "dead-lettered").inc(1)
    sent = Counter("msarch_messages_published", "", labels, registry=registry)
    sent.labels("store", "msarch-t1.forward_roundtrip").inc(published)
    timing = Histogram("msarch_message_handling_seconds", "", labels, registry=registry)
    for seconds in handled:
        timing.labels("store", "msarch-t1.event").observe(seconds)
    Gauge("msarch_consumer_lag", "", labels, registry=registry).labels(
        "store", "msarch-t1.event"
    ).set(7)
    Gauge("msarch_dead_letters", "", ["channel"], registry=registry).labels("event").set(2)
    return generate_latest(registry).decode()


def test_channel_labels_lose_their_namespace() -> None:
    assert channel_of("msarch-t1.event") == "event"
    assert channel_of("ns.batch_reply") == "batch_reply"
    assert channel_of("ns.batch") == "batch"
    assert channel_of("forward_roundtrip") == "forward_roundtrip"
    assert channel_of("something-else") == "something-else"


def test_metrics_text_is_read_by_channel() -> None:
    metrics = read_metrics(metrics_text(consumed=10, published=4, handled=[0.002, 0.02]))
    assert metrics.consumed == {"event": 10.0}  # every outcome
    assert metrics.published == {"forward_roundtrip": 4.0}
    assert metrics.lag == {"event": 7.0}
    assert metrics.dead_letters == {"event": 2.0}
    bounds = [bound for bound, _ in metrics.buckets["event"]]
    assert bounds == sorted(bounds)
    assert bounds[-1] == float("inf")
    assert metrics.buckets["event"][-1][1] == 2.0


def test_an_answer_that_is_not_prometheus_text_has_no_metrics() -> None:
    assert metrics_of(200, "<html>not metrics</html>") == Metrics()
    assert metrics_of(404, "") == Metrics()


def test_quantiles_interpolate_within_their_bucket() -> None:
    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.7, buckets) == pytest.approx(0.01 + 0.09 * 20 / 40)
    assert quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 9 / 10)
    assert quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1  # past the last bound


def test_rates_difference_two_readings_and_survive_a_restart() -> None:
    assert rate(30.0, 10.0, 2.0) == 10.0
    assert rate(5.0, 100.0, 1.0) == 5.0  # the counter reset: counted from zero
    assert rate(30.0, None, 1.0) == 0.0  # a first reading has no rate yet


def test_latency_is_of_the_interval_when_something_was_handled_in_it() -> None:
    before = [(0.01, 100.0), (1.0, 100.0), (float("inf"), 100.0)]
    now = [(0.01, 100.0), (1.0, 110.0), (float("inf"), 110.0)]
    assert since(now, before) == [(0.01, 0.0), (1.0, 10.0), (float("inf"), 10.0)]
    assert since(before, now) == before  # a restart: everything it has is new


def test_figures_per_channel_between_two_readings() -> None:
    first = read_metrics(metrics_text(consumed=10, published=4, handled=[0.002] * 9))
    second = read_metrics(metrics_text(consumed=30, published=14, handled=[0.002] * 9 + [0.4]))
    figures = channel_figures(second, first, seconds=2.0)
    assert figures["event"]["in_per_s"] == 10.0
    assert figures["forward_roundtrip"]["out_per_s"] == 5.0
    assert figures["event"]["lag"] == 7.0
    assert figures["event"]["dead_letters"] == 2.0
    # Only the 0.4 s handling happened in between: p50 falls in its bucket, not the 2 ms one.
    assert figures["event"]["p50_ms"] is not None
    assert figures["event"]["p50_ms"] > 250
    alone = channel_figures(first, None, 0.0)
    assert alone["event"]["in_per_s"] == 0.0
    assert alone["event"]["p50_ms"] is not None
    assert alone["event"]["p50_ms"] < 5
    assert channel_figures(Metrics(), None, 0.0) == {}


def test_instances_that_do_not_answer_are_down_not_an_error(gateway: TestClient) -> None:
    assert gateway.get("/api/live").status_code == 401
    answer = gateway.get("/api/live", params={"api_key": "the-key"})
    assert answer.status_code == 200
    snapshot = answer.json()
    for service in SERVICES:
        states = [i["state"] for i in snapshot["services"][service]["instances"]]
        assert states == ["up"] if service == "gateway" else states == ["down"], service
    assert snapshot["infrastructure"] == {
        "broker": "unknown",
        "redis": "unknown",
        "consul": "static",
    }
