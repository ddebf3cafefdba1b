"""`python -m bench --json`: one strict JSON object on stdout, everything else on stderr; and
the document's shape. The benchmarks themselves are replaced by a stand-in `run`."""

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest

import bench.__main__ as bench_main
from bench.report import json_safe, run_document
from bench.targets import comparisons


def test_json_safe_turns_nan_and_infinities_into_null() -> None:
    value = {"p50_ms": math.nan, "max": math.inf, "runs": (1.5, -math.inf), "plot": Path("a/b")}
    safe = json_safe(value)
    assert safe == {"p50_ms": None, "max": None, "runs": [1.5, None], "plot": "a/b"}
    json.dumps(safe, allow_nan=False)  # strict JSON


def test_the_document_holds_every_figure_comparison_and_verdict() -> None:
    results: dict[str, dict[str, Any]] = {
        "rabbit": {
            "batch": {
                "items": 2000,
                "items_per_s_median": 900.0,
                "runs": [{"size": 2000, "items_per_s": 900.0}],
                "raw": {"name": "raw aio-pika", "items_per_s_median": 1000.0, "runs": []},
            },
            "roundtrip": {"websocket": {"p50_ms": math.nan}},
        }
    }
    found = comparisons(results)
    document = run_document(
        {"nproc": 2}, "python -m bench --json", results, [c.as_dict() for c in found], True, None
    )
    parsed = json.loads(json.dumps(document, allow_nan=False))
    assert set(parsed) == {
        "date", "command", "machine", "comparisons", "targets_met", "results", "plot",
    }  # fmt: skip
    assert parsed["results"]["rabbit"]["roundtrip"]["websocket"]["p50_ms"] is None
    (batch,) = parsed["comparisons"]
    assert batch == {
        "backend": "rabbit",
        "figure": "batch_items_per_s",
        "title": "RabbitMQ batch items/s (2,000 items)",
        "msarch": 900.0,
        "baseline": 1000.0,
        "baseline_name": "raw aio-pika",
        "ratio": 0.9,
        "target": {"op": ">=", "bound": 0.8},
        "requirement": None,
        "met": True,
    }


def test_json_mode_prints_exactly_one_object_on_stdout(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    async def stand_in(args: Any, command: str) -> dict[str, Any]:
        print("bench: a human line")
        sys.stdout.flush()
        os.write(1, b"what a child process writes on its stdout\n")
        return {"command": command, "ratio": 0.6}

    monkeypatch.setattr(bench_main, "run", stand_in)
    monkeypatch.setattr(sys, "argv", ["python -m bench", "batch", "--json", "--repeat", "1"])
    bench_main.main()
    out, err = capfd.readouterr()
    assert json.loads(out) == {
        "command": "python -m bench batch --json --repeat 1",
        "ratio": 0.6,
    }
    assert out.count("\n") == 1
    assert "bench: a human line" in err
    assert "what a child process writes" in err
    print("stdout is stdout again")
    assert capfd.readouterr().out == "stdout is stdout again\n"


@pytest.mark.parametrize("argv", [["--repeat", "0"], ["--repeat", "-2"]])
def test_repeat_must_be_at_least_one(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench_main.parse_args(argv)


def test_repeat_defaults_to_three_and_baselines_run_by_default() -> None:
    args = bench_main.parse_args(["batch"])
    assert (args.repeat, args.no_baselines, args.json) == (3, False, False)
