"""The run's plot (PNG, matplotlib's Agg backend): items/s against batch size, and the
roundtrip's POST -> websocket frame percentiles, msarch against the raw baselines.

Written by `python -m bench` next to the figures (bench/results/<date>-plot.png) when
matplotlib is installed (the dev extra has it); without it the run simply has no plot.
"""

from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.repeats import median_run
from bench.targets import BACKEND_NAMES

PERCENTILES = ("p50", "p90", "p99")
COLOURS = {"rabbit": "tab:orange", "nats": "tab:blue"}

Points = list[tuple[int, float]]


def _per_size(runs: list[dict[str, Any]]) -> Points:
    """(size, items/s) in size order; a size run more than once gives its median."""
    by_size: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_size[int(run["size"])].append(run)
    return [
        (size, float(median_run(sized, lambda r: float(r["items_per_s"]))["items_per_s"]))
        for size, sized in sorted(by_size.items())
    ]


def batch_series(results: dict[str, dict[str, Any]]) -> dict[tuple[str, str], Points]:
    """(backend, who) -> (batch size, items/s): msarch's, and its raw baseline's if run."""
    series: dict[tuple[str, str], Points] = {}
    for backend, figures in results.items():
        if backend not in BACKEND_NAMES or not (batch := figures.get("batch")):
            continue
        series[(backend, "msarch")] = _per_size(batch["runs"])
        if raw := batch.get("raw"):
            series[(backend, raw["name"])] = _per_size(raw["runs"])
    return series


def _percentiles(latency: dict[str, Any]) -> dict[str, float]:
    return {p: float(latency[f"{p}_ms"]) for p in PERCENTILES if f"{p}_ms" in latency}


def latency_bars(results: dict[str, dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    """(backend, who) -> {percentile: ms} of POST -> websocket frame (the median runs)."""
    bars: dict[tuple[str, str], dict[str, float]] = {}
    for backend, figures in results.items():
        if backend not in BACKEND_NAMES or not (roundtrip := figures.get("roundtrip")):
            continue
        bars[(backend, "msarch (gateway)")] = _percentiles(roundtrip["websocket"])
        if raw := roundtrip.get("raw"):
            bars[(backend, raw["name"])] = _percentiles(raw["latency"])
    return bars


def save_plot(results: dict[str, dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Draw the run's figures into `path` (`title` above both); None when matplotlib is
    missing or there is nothing to draw."""
    series, bars = batch_series(results), latency_bars(results)
    if not (series or bars):
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    if title:
        figure.suptitle(title, fontsize=9)
    throughput, latency = figure.subplots(1, 2)
    for (backend, who), points in series.items():
        sizes, rates = zip(*points, strict=True)
        raw = who != "msarch"
        throughput.plot(
            sizes, rates, color=COLOURS.get(backend), linestyle="--" if raw else "-",
            marker="s" if raw else "o", label=f"{BACKEND_NAMES[backend]}: {who}",
        )  # fmt: skip
    sizes_drawn = sorted({size for points in series.values() for size, _ in points})
    throughput.set(xscale="log", xlabel="batch size (items)", ylabel="items/s",
                   title="batch: items/s against batch size")  # fmt: skip
    throughput.set_xticks(sizes_drawn, [f"{size:,}" for size in sizes_drawn])
    throughput.minorticks_off()
    throughput.grid(True, which="both", alpha=0.3)
    throughput.legend()
    width = 0.8 / max(1, len(PERCENTILES))
    labels = [f"{BACKEND_NAMES[backend]}\n{who}" for backend, who in bars]
    for offset, percentile in enumerate(PERCENTILES):
        heights = [values.get(percentile, 0.0) for values in bars.values()]
        positions = [i + (offset - 1) * width for i in range(len(bars))]
        drawn = latency.bar(positions, heights, width, label=percentile)
        latency.bar_label(drawn, fmt="%.1f", fontsize=7)
    latency.set_xticks(range(len(bars)), labels, fontsize=8)
    latency.set(ylabel="ms", title="roundtrip: POST → websocket frame, one at a time")
    latency.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
