"""The pure parts of the bench's comparison with the raw baselines: ratios, targets, the
median of repeated runs, and the order of a run's batch sizes. No broker, no process."""

import math
from typing import Any

import pytest

from bench.batch import batch_plan
from bench.repeats import median_run
from bench.targets import (
    BACKLOG_LIMIT_S,
    Comparison,
    Goal,
    Requirement,
    all_met,
    comparisons,
    ratio_of,
)


def batch_figures(msarch: float, raw: float | None, items: int = 10_000) -> dict[str, Any]:
    figures: dict[str, Any] = {"items": items, "items_per_s_median": msarch, "runs": []}
    if raw is not None:
        figures["raw"] = {"name": "raw aio-pika", "items_per_s_median": raw, "runs": []}
    return figures


def roundtrip_figures(
    p50: float, raw_p50: float, completed: float, raw_completed: float, backlog_s: float
) -> dict[str, Any]:
    return {
        "concurrency": 32,
        "gateway": {"completed_per_s": completed, "backlog_at_end_s": backlog_s},
        "websocket": {"p50_ms": p50},
        "raw": {
            "name": "raw chain (aio-pika)",
            "load": {"completed_per_s": raw_completed},
            "latency": {"p50_ms": raw_p50},
        },
    }


def by_figure(found: list[Comparison]) -> dict[tuple[str, str], Comparison]:
    return {(c.backend, c.figure): c for c in found}


@pytest.mark.parametrize(
    ("value", "baseline", "expected"),
    [
        (2890.0, 4838.0, 2890 / 4838),
        (7.98, 2.4, 7.98 / 2.4),
        (1.0, 0.0, None),
        (None, 1.0, None),
        (1.0, None, None),
        (math.nan, 1.0, None),
        (1.0, math.inf, None),
    ],
)
def test_ratio_is_value_over_baseline_or_none(
    value: float | None, baseline: float | None, expected: float | None
) -> None:
    got = ratio_of(value, baseline)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_a_rate_goal_is_a_lower_bound_and_a_latency_goal_an_upper_bound() -> None:
    rate, latency = Goal(0.8), Goal(2.0, at_most=True)
    assert [rate.met_by(r) for r in (0.8, 1.3, 0.79)] == [True, True, False]
    assert [latency.met_by(r) for r in (2.0, 0.5, 2.01)] == [True, True, False]
    assert rate.met_by(None) is None
    assert (str(rate), str(latency)) == ("≥ 0.8", "≤ 2.0")


def test_the_issue_table_gives_its_ratios_and_misses_every_target() -> None:
    """Issue 15's own figures: 0.60, 0.20, 3.3x, 0.56; none met."""
    results = {
        "rabbit": {
            "batch": batch_figures(2890, 4838),
            "roundtrip": roundtrip_figures(7.98, 2.4, 419, 747, backlog_s=0.3),
        },
        "nats": {"batch": batch_figures(3090, 15714)},
    }
    found = by_figure(comparisons(results))
    assert set(found) == {
        ("rabbit", "batch_items_per_s"),
        ("rabbit", "roundtrip_p50_ms"),
        ("rabbit", "roundtrips_per_s"),
        ("nats", "batch_items_per_s"),
    }
    assert found["rabbit", "batch_items_per_s"].ratio == pytest.approx(0.597, abs=1e-3)
    assert found["nats", "batch_items_per_s"].ratio == pytest.approx(0.197, abs=1e-3)
    assert found["rabbit", "roundtrip_p50_ms"].ratio == pytest.approx(3.325, abs=1e-3)
    assert found["rabbit", "roundtrips_per_s"].ratio == pytest.approx(0.561, abs=1e-3)
    assert all(c.met is False for c in found.values())
    assert all_met(list(found.values())) is False


def test_targets_differ_per_backend_for_the_batch() -> None:
    """0.6 of the raw library meets NATS's 0.5 but not RabbitMQ's 0.8."""
    results = {
        "rabbit": {"batch": batch_figures(600, 1000)},
        "nats": {"batch": batch_figures(600, 1000)},
    }
    found = by_figure(comparisons(results))
    assert found["rabbit", "batch_items_per_s"].met is False
    assert found["nats", "batch_items_per_s"].met is True


def test_throughput_needs_the_store_to_keep_up_as_well() -> None:
    fast_but_behind = roundtrip_figures(3.0, 2.0, 900, 1000, backlog_s=BACKLOG_LIMIT_S + 0.5)
    keeping_up = roundtrip_figures(3.0, 2.0, 900, 1000, backlog_s=BACKLOG_LIMIT_S)
    behind = by_figure(comparisons({"rabbit": {"roundtrip": fast_but_behind}}))
    kept = by_figure(comparisons({"rabbit": {"roundtrip": keeping_up}}))
    assert behind["rabbit", "roundtrips_per_s"].ratio == pytest.approx(0.9)
    assert behind["rabbit", "roundtrips_per_s"].met is False
    assert kept["rabbit", "roundtrips_per_s"].met is True
    assert kept["rabbit", "roundtrip_p50_ms"].met is True  # 1.5x <= 2.0


def test_no_baseline_no_comparison() -> None:
    results = {
        "rabbit": {"batch": batch_figures(2890, None)},
        "redis": {"wait": {"p50_ratio": 1.2}},
    }
    assert comparisons(results) == []
    assert all_met([]) is None


def test_a_figure_that_could_not_be_measured_cannot_be_judged() -> None:
    unmeasured = comparisons({"nats": {"batch": batch_figures(math.nan, 1000)}})
    assert unmeasured[0].ratio is None
    assert unmeasured[0].met is None
    assert "cannot tell" in unmeasured[0].line()
    met = comparisons({"nats": {"batch": batch_figures(900, 1000)}})
    assert all_met(met + unmeasured) is None


def test_the_line_shows_both_figures_the_ratio_and_the_verdict() -> None:
    found = comparisons({"rabbit": {"batch": batch_figures(2890, 4838)}})
    assert found[0].line() == (
        "RabbitMQ batch items/s (10,000 items): msarch 2,890 | raw aio-pika 4,838 | "
        "ratio 0.60 (target ≥ 0.8: not met)"
    )
    requirement = Requirement("store backlog at end ≤ 1 s", 0.25, 1.0, unit=" s")
    line = Comparison("nats", "roundtrips_per_s", "NATS 32-connection roundtrips/s", 700.0,
                      750.0, "raw chain (nats-py)", Goal(0.8), requirement).line()  # fmt: skip
    assert line.endswith("ratio 0.93 (target ≥ 0.8, store backlog at end ≤ 1 s (now 0.25 s): met)")


def test_median_run_is_one_of_the_runs() -> None:
    runs = [{"rate": 3.0, "p99": 30}, {"rate": 1.0, "p99": 10}, {"rate": 2.0, "p99": 20}]
    median = median_run(runs, lambda r: r["rate"])
    assert median is runs[2]
    assert median["p99"] == 20  # its other figures come with it


def test_median_run_of_an_even_number_is_the_lower_middle_and_nan_sorts_last() -> None:
    assert median_run([4.0, 1.0, 3.0, 2.0], float) == 2.0
    assert median_run([math.nan, 5.0, 1.0], float) == 5.0
    assert median_run([7.0], float) == 7.0
    with pytest.raises(ValueError, match="no runs"):
        median_run([], float)


def test_batch_plan_repeats_only_the_measured_size() -> None:
    assert batch_plan(10_000, large=False, repeat=3) == [(1_000, 1), (10_000, 3)]
    assert batch_plan(1_000, large=False, repeat=3) == [(1_000, 3)]
    assert batch_plan(500, large=True, repeat=2) == [
        (500, 2), (1_000, 1), (100_000, 1), (1_000_000, 1),
    ]  # fmt: skip
