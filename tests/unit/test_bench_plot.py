"""The bench's plot: which points and bars it draws from a run's figures, and the PNG."""

from pathlib import Path
from typing import Any

import pytest

from bench.plot import batch_series, latency_bars, save_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(size: int, items_per_s: float) -> dict[str, Any]:
    return {"size": size, "items_per_s": items_per_s}


def results() -> dict[str, dict[str, Any]]:
    latency = {"p50_ms": 8.0, "p90_ms": 12.0, "p99_ms": 30.0, "max_ms": 40.0}
    return {
        "rabbit": {
            "batch": {
                "runs": [run(10_000, 2800), run(1_000, 900), run(10_000, 2900), run(10_000, 3000)],
                "raw": {"name": "raw aio-pika", "runs": [run(1_000, 3000), run(10_000, 4800)]},
            },
            "roundtrip": {
                "websocket": latency,
                "raw": {"name": "raw chain (aio-pika)", "latency": {**latency, "p50_ms": 2.4}},
            },
        },
        "nats": {"batch": {"runs": [run(1_000, 2000)]}},
        "redis": {"wait": {}},
    }


def test_batch_series_take_the_median_of_a_repeated_size_in_size_order() -> None:
    series = batch_series(results())
    assert series == {
        ("rabbit", "msarch"): [(1_000, 900.0), (10_000, 2900.0)],
        ("rabbit", "raw aio-pika"): [(1_000, 3000.0), (10_000, 4800.0)],
        ("nats", "msarch"): [(1_000, 2000.0)],
    }


def test_latency_bars_are_msarch_and_its_raw_chain_per_backend() -> None:
    bars = latency_bars(results())
    assert bars == {
        ("rabbit", "msarch (gateway)"): {"p50": 8.0, "p90": 12.0, "p99": 30.0},
        ("rabbit", "raw chain (aio-pika)"): {"p50": 2.4, "p90": 12.0, "p99": 30.0},
    }


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = save_plot(results(), tmp_path / "results" / "plot.png", title="a run")
    assert path == tmp_path / "results" / "plot.png"
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_nothing_to_draw_no_file(tmp_path: Path) -> None:
    assert save_plot({"redis": {"wait": {}}}, tmp_path / "plot.png") is None
    assert not (tmp_path / "plot.png").exists()
