"""The pure parts of the tracing benchmark: the overhead of each sampling ratio over the
baseline, the lines that print it, the verdict and the order of the rounds. No broker, no
process."""

import math
from typing import Any

import pytest

from bench.summary import print_summary
from bench.tracing import (
    DEFAULT_SAMPLE,
    SAMPLES,
    comparison_line,
    expected_batch_overhead_pct,
    mode_of,
    overhead_pct,
    overhead_text,
    round_order,
    traced,
    verdict,
    verdict_line,
)


@pytest.mark.parametrize(
    ("baseline", "value", "expected"),
    [
        (2950.0, 3020.0, (3020 - 2950) / 2950 * 100),
        (100.0, 100.0, 0.0),
        (100.0, 90.0, -10.0),
        (0.0, 5.0, None),
        (-1.0, 5.0, None),
        (math.nan, 5.0, None),
        (5.0, math.inf, None),
    ],
)
def test_overhead_is_the_percentage_above_the_baseline_or_none(
    baseline: float, value: float, expected: float | None
) -> None:
    found = overhead_pct(baseline, value)
    if expected is None:
        assert found is None
    else:
        assert found == pytest.approx(expected)


@pytest.mark.parametrize(
    ("pct", "text"),
    [(2.37, "+2.4 %"), (-0.84, "-0.8 %"), (0.0, "+0.0 %"), (32.2, "+32 %"), (None, "n/a")],
)
def test_overhead_text_has_a_decimal_below_ten_percent(pct: float | None, text: str) -> None:
    assert overhead_text(pct) == text


def test_comparison_line_puts_each_mode_beside_the_baseline() -> None:
    line = comparison_line("roundtrip CPU/req total", {"off": 2950, "0.1": 3020, "1.0": 3900})
    assert line == (
        "roundtrip CPU/req total: off 2,950 µs | 0.1 3,020 µs (+2.4 %) | 1.0 3,900 µs (+32 %)"
    )


@pytest.mark.parametrize(
    ("traceparent", "sampled"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", False),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", True),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz", False),
        ("garbage", False),
        (None, False),
    ],
)
def test_a_batch_is_traced_when_its_answer_names_a_sampled_trace(
    traceparent: str | None, sampled: bool
) -> None:
    assert traced(traceparent) is sampled


def test_a_batch_expects_the_traced_overhead_in_proportion_to_the_sample() -> None:
    assert expected_batch_overhead_pct(0.1, 30.0) == pytest.approx(3.0)
    assert expected_batch_overhead_pct(1.0, 30.0) == pytest.approx(30.0)
    assert expected_batch_overhead_pct(0.1, None) is None


def test_modes_are_named_off_then_by_ratio_and_the_default_is_compared() -> None:
    assert [mode_of(s) for s in (0.0, 0.1, 1.0)] == ["off", "0.1", "1.0"]
    assert SAMPLES[0] == 0.0
    assert SAMPLES[-1] == 1.0
    assert DEFAULT_SAMPLE in SAMPLES


def test_each_mode_takes_every_place_once_over_as_many_rounds() -> None:
    modes = ["off", "0.1", "1.0"]
    orders = [round_order(modes, number) for number in range(3)]
    assert orders[0] == modes
    for place in range(3):
        assert sorted(order[place] for order in orders) == sorted(modes)
    assert round_order(modes, 3) == modes
    assert round_order([], 1) == []


@pytest.mark.parametrize(
    ("overheads", "met"),
    [
        ({"roundtrip": 2.4, "batch": 9.9}, True),
        ({"roundtrip": 2.4, "batch": 10.0}, False),
        ({"roundtrip": -3.0, "batch": 0.5}, True),
        ({"roundtrip": None, "batch": 0.5}, False),
    ],
)
def test_the_default_meets_the_bar_only_when_every_overhead_is_under_it(
    overheads: dict[str, float | None], met: bool
) -> None:
    assert verdict(overheads) is met
    line = verdict_line(0.1, overheads)
    assert ("does NOT stay under" not in line) is met
    assert line.startswith("tracing at MSARCH_TRACE_SAMPLE=0.1 (the default)")


def tracing_figures(off: float, default: float, every: float) -> dict[str, Any]:
    def mode(roundtrip: float, item: float) -> dict[str, Any]:
        return {
            "roundtrip": {"cpu_us_per_roundtrip": {"gateway": roundtrip / 2, "total": roundtrip}},
            "batch": {"cpu_us_per_item": {"batch": item / 4, "total": item}},
        }

    return {
        "default_sample": 0.1,
        "limit_pct": 10.0,
        "modes": {
            "off": mode(off, off / 10),
            "0.1": mode(default, default / 10),
            "1.0": mode(every, every / 10),
        },
        "overhead_pct": {
            "0.1": {"roundtrip": overhead_pct(off, default), "batch": overhead_pct(off, default)},
            "1.0": {"roundtrip": overhead_pct(off, every), "batch": overhead_pct(off, every)},
        },
        "default_overhead_pct": {"roundtrip": overhead_pct(off, default), "batch": 5.0},
    }


def test_the_summary_gives_both_totals_and_the_verdict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_summary({"rabbit": {"tracing": tracing_figures(3000.0, 3150.0, 4500.0)}})
    assert capsys.readouterr().out.splitlines()[-3:] == [
        "rabbit tracing: roundtrip CPU/req total: off 3,000 µs | 0.1 3,150 µs (+5.0 %) "
        "| 1.0 4,500 µs (+50 %)",
        "rabbit tracing: batch CPU/item total: off 300 µs | 0.1 315 µs (+5.0 %) "
        "| 1.0 450 µs (+50 %)",
        "rabbit tracing at MSARCH_TRACE_SAMPLE=0.1 (the default) stays under +10 %: "
        "roundtrip +5.0 %, batch +5.0 %",
    ]
