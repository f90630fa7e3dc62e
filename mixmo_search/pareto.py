"""Pareto fronts over trial rows, for multi-objective searches and promotion.

Rows are plain dicts (one per trial, e.g. `{"val/acc": 0.8, "val/disagreement": 0.2}`);
a row missing a metric, or holding None or NaN for it, takes no part.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MODES = ("min", "max")


def _scores(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], modes: Sequence[str]
) -> tuple[list[int], np.ndarray]:
    """Indices of the complete rows and their values, negated where smaller is better."""
    if not metrics or len(metrics) != len(modes):
        raise ValueError(f"need one mode per metric; got metrics={metrics}, modes={modes}")
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode must be min or max; got {mode!r}")
    keep, values = [], []
    for i, row in enumerate(rows):
        point = [row.get(m) for m in metrics]
        if all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isnan(v)
            for v in point
        ):
            keep.append(i)
            values.append(point)
    sign = np.array([1.0 if mode == "max" else -1.0 for mode in modes])
    return keep, np.array(values, dtype=float).reshape(len(keep), len(metrics)) * sign


def _front(scores: np.ndarray) -> np.ndarray:
    """Mask of the rows no other row dominates (>= on every metric, > on one)."""
    at_least = (scores[:, None, :] >= scores[None, :, :]).all(-1)  # (n, n): [i, j] = i >= j
    better = (scores[:, None, :] > scores[None, :, :]).any(-1)  # [i, j] = i > j somewhere
    return ~(at_least & better).any(0)  # identical points never dominate each other


def pareto_front(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], modes: Sequence[str]
) -> list[int]:
    """Indices (into `rows`, ascending) of the non-dominated rows."""
    keep, scores = _scores(rows, metrics, modes)
    return [keep[i] for i in np.flatnonzero(_front(scores))]


def knee_point(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], modes: Sequence[str]
) -> int:
    """Index of the Pareto row nearest the utopia point, each metric min-max scaled on the front.

    A metric that is constant on the front carries no trade-off and is ignored; ties go to
    the lowest index.
    """
    keep, scores = _scores(rows, metrics, modes)
    if not keep:
        raise ValueError(f"no row has every metric of {list(metrics)} as a number")
    on_front = np.flatnonzero(_front(scores))
    front = scores[on_front]
    low, span = front.min(0), front.max(0) - front.min(0)
    scaled = np.divide(front - low, span, out=np.ones_like(front), where=span > 0)
    distance = np.linalg.norm(1.0 - scaled, axis=1)  # utopia: the best of every metric
    return keep[on_front[int(np.argmin(distance))]]
