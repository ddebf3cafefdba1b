"""Repeated measurements: the median run of a few (`--repeat`, 3 by default).

The median is taken as one of the runs, not figure by figure, so the figures printed and
saved together (a p50 and its p99, items/s and its CPU per item) come from the same run.
"""

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def median_run(runs: Sequence[T], figure: Callable[[T], float]) -> T:
    """The run whose `figure` is the median; of an even number, the lower of the two middle
    ones. A run whose figure is NaN (nothing measured) sorts last."""
    if not runs:
        raise ValueError("no runs to take the median of")

    def order(run: T) -> float:
        value = figure(run)
        return math.inf if math.isnan(value) else value

    return sorted(runs, key=order)[(len(runs) - 1) // 2]
