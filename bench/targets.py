"""Issue 15's targets: each msarch figure against its raw baseline, measured in the same run.

- batch items/s, msarch / the raw library: RabbitMQ >= 0.8, NATS >= 0.5;
- roundtrip p50 POST -> websocket frame, msarch / the raw chain: <= 2.0;
- completed roundtrips/s under 32 keep-alive connections, msarch / the raw chain: >= 0.8,
  with the store's backlog at the end of the load <= 1 s of traffic.

Each figure is the median of the run's repetitions (--repeat, 3 by default).

Pure: it reads the figures bench/batch.py and bench/roundtrip.py return, measures nothing.
"""

import math
from dataclasses import dataclass
from typing import Any

BACKEND_NAMES = {"rabbit": "RabbitMQ", "nats": "NATS"}
BATCH_GOALS = {"rabbit": 0.8, "nats": 0.5}
LATENCY_GOAL = 2.0
THROUGHPUT_GOAL = 0.8
BACKLOG_LIMIT_S = 1.0


def ratio_of(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, or None when either is missing or not finite, or the baseline is 0."""
    if value is None or baseline is None:
        return None
    if not (math.isfinite(value) and math.isfinite(baseline)) or baseline == 0:
        return None
    return value / baseline


@dataclass(frozen=True)
class Goal:
    """A bound on the ratio: at least `bound` (a rate), or at most (a latency)."""

    bound: float
    at_most: bool = False

    def met_by(self, ratio: float | None) -> bool | None:
        """None when there is no ratio to judge."""
        if ratio is None:
            return None
        return ratio <= self.bound if self.at_most else ratio >= self.bound

    def __str__(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.bound:.1f}"

    def as_dict(self) -> dict[str, Any]:
        return {"op": "<=" if self.at_most else ">=", "bound": self.bound}


@dataclass(frozen=True)
class Requirement:
    """A further condition on msarch's own figures, e.g. the store keeping up."""

    text: str
    """What it asks, e.g. "store backlog at end ≤ 1 s"."""
    value: float | None
    limit: float
    unit: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or not math.isfinite(self.value):
            return None
        return self.value <= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "value": self.value, "limit": self.limit, "met": self.met}


@dataclass(frozen=True)
class Comparison:
    backend: str
    figure: str
    """A stable key: batch_items_per_s, roundtrip_p50_ms, roundtrips_per_s."""
    title: str
    msarch: float | None
    baseline: float | None
    baseline_name: str
    goal: Goal
    requirement: Requirement | None = None

    @property
    def ratio(self) -> float | None:
        return ratio_of(self.msarch, self.baseline)

    @property
    def met(self) -> bool | None:
        """The goal and the requirement both met; None when either cannot be judged."""
        checks = [self.goal.met_by(self.ratio)]
        if self.requirement is not None:
            checks.append(self.requirement.met)
        if False in checks:
            return False
        return None if None in checks else True

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "backend": self.backend,
            "figure": self.figure,
            "title": self.title,
            "msarch": self.msarch,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": None if ratio is None else round(ratio, 3),
            "target": self.goal.as_dict(),
            "requirement": self.requirement.as_dict() if self.requirement else None,
            "met": self.met,
        }

    def line(self) -> str:
        """E.g. "RabbitMQ batch items/s: msarch 2,890 | raw aio-pika 4,838 | ratio 0.60
        (target ≥ 0.8: not met)"."""
        ratio = "n/a" if self.ratio is None else f"{self.ratio:.2f}"
        target = f"target {self.goal}"
        if self.requirement is not None:
            value = self.requirement.value
            shown = "n/a" if value is None else f"{value:g}{self.requirement.unit}"
            target += f", {self.requirement.text} (now {shown})"
        verdict = {True: "met", False: "not met", None: "cannot tell"}[self.met]
        return (
            f"{self.title}: msarch {_number(self.msarch)} | {self.baseline_name} "
            f"{_number(self.baseline)} | ratio {ratio} ({target}: {verdict})"
        )


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def _batch(backend: str, batch: dict[str, Any]) -> Comparison:
    raw = batch["raw"]
    return Comparison(
        backend=backend,
        figure="batch_items_per_s",
        title=f"{BACKEND_NAMES[backend]} batch items/s ({batch['items']:,} items)",
        msarch=batch["items_per_s_median"],
        baseline=raw["items_per_s_median"],
        baseline_name=raw["name"],
        goal=Goal(BATCH_GOALS[backend]),
    )


def _latency(backend: str, roundtrip: dict[str, Any]) -> Comparison:
    raw = roundtrip["raw"]
    return Comparison(
        backend=backend,
        figure="roundtrip_p50_ms",
        title=f"{BACKEND_NAMES[backend]} roundtrip p50 POST→frame ms",
        msarch=roundtrip["websocket"]["p50_ms"],
        baseline=raw["latency"]["p50_ms"],
        baseline_name=raw["name"],
        goal=Goal(LATENCY_GOAL, at_most=True),
    )


def _throughput(backend: str, roundtrip: dict[str, Any]) -> Comparison:
    raw, gateway = roundtrip["raw"], roundtrip["gateway"]
    return Comparison(
        backend=backend,
        figure="roundtrips_per_s",
        title=f"{BACKEND_NAMES[backend]} {roundtrip['concurrency']}-connection roundtrips/s",
        msarch=gateway["completed_per_s"],
        baseline=raw["load"]["completed_per_s"],
        baseline_name=raw["name"],
        goal=Goal(THROUGHPUT_GOAL),
        requirement=Requirement(
            f"store backlog at end ≤ {BACKLOG_LIMIT_S:g} s",
            gateway["backlog_at_end_s"],
            BACKLOG_LIMIT_S,
            unit=" s",
        ),
    )


def comparisons(results: dict[str, dict[str, Any]]) -> list[Comparison]:
    """Every comparison the run's figures allow: a backend's batch or roundtrip counts only
    when its raw baseline ran too."""
    found: list[Comparison] = []
    for backend, figures in results.items():
        if backend not in BACKEND_NAMES:
            continue  # redis, cluster: no raw baseline
        if (batch := figures.get("batch")) and "raw" in batch:
            found.append(_batch(backend, batch))
        if (roundtrip := figures.get("roundtrip")) and "raw" in roundtrip:
            found += [_latency(backend, roundtrip), _throughput(backend, roundtrip)]
    return found


def all_met(found: list[Comparison]) -> bool | None:
    """True when every target is met; None when there is none, or one cannot be judged."""
    verdicts = [c.met for c in found]
    if not verdicts:
        return None
    if False in verdicts:
        return False
    return None if None in verdicts else True
