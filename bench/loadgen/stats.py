"""Summaries of latency samples: the few numbers the table prints, from raw samples."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (q in 0..100)."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summary(samples: Sequence[float]) -> dict[str, float]:
    """min/avg/p50/p99/max and the count, in the samples' own unit; NaN when empty."""
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "min": ordered[0] if ordered else math.nan,
        "avg": sum(ordered) / len(ordered) if ordered else math.nan,
        "p50": percentile(ordered, 50),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else math.nan,
    }
