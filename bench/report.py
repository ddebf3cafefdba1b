"""Printing tables, keeping the figures as JSON under bench/results/, and the one JSON
document `python -m bench --json` prints."""

import json
import math
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], note: str = ""
) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n== {title}")
    if note:
        print(f"   {note}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def ratio_text(baseline: float, value: float) -> str:
    """value / baseline as "1.23x"; "n/a" when either is missing or the baseline is 0."""
    if not (math.isfinite(baseline) and math.isfinite(value)) or baseline == 0:
        return "n/a"
    return f"{value / baseline:.2f}x"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def save_results(
    backend: str, figures: dict[str, Any], machine: dict[str, Any], command: str
) -> Path:
    """Put this run's benchmarks into bench/results/<date>-<backend>.json, keeping the others."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{date.today().isoformat()}-{backend}.json"
    previous: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    # A benchmark's figures are replaced whole, so each keeps the baseline of its own run.
    benchmarks = previous.get("benchmarks", {}) | {
        name: {**value, "command": command} for name, value in figures.items()
    }
    commands = [c for c in previous.get("commands", []) if c != command] + [command]
    document = {
        "date": date.today().isoformat(),
        "backend": backend,
        "machine": machine,
        "commands": commands,
        "benchmarks": benchmarks,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def json_safe(value: Any) -> Any:
    """`value` as strict JSON can hold it: NaN and infinities (a percentile of nothing)
    become null, tuples lists, paths strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def run_document(
    machine: dict[str, Any],
    command: str,
    results: dict[str, dict[str, Any]],
    comparisons: list[dict[str, Any]],
    targets_met: bool | None,
    plot: Path | None,
) -> dict[str, Any]:
    """Everything one run measured: each figure, each baseline, each ratio and its target."""
    document: dict[str, Any] = json_safe(
        {
            "date": date.today().isoformat(),
            "command": command,
            "machine": machine,
            "comparisons": comparisons,
            "targets_met": targets_met,
            "results": results,
            "plot": plot,
        }
    )
    return document
