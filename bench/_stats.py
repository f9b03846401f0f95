"""Summaries the benchmarks share, so every table reads its numbers the same way."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median_min_max(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def slowest_rank_median(per_rank: Sequence[Sequence[float]]) -> float:
    """A collective's time: per repetition the slowest rank's (the operation ends when the last
    rank has its result), then the median over the repetitions."""
    return statistics.median(max(times) for times in zip(*per_rank, strict=True))
