from __future__ import annotations

import math
import random

import numpy as np
import pytest

from mixmo_search.pareto import knee_point, pareto_front


def dominates(a: list[float], b: list[float]) -> bool:
    """a dominates b, all metrics maximised."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and a != b


def brute_front(rows: list[dict], metrics: list[str], modes: list[str]) -> list[int]:
    def point(row: dict) -> list[float] | None:
        values = [row.get(m) for m in metrics]
        if any(v is None or math.isnan(v) for v in values):
            return None
        return [v if mode == "max" else -v for v, mode in zip(values, modes, strict=True)]

    points = {i: point(r) for i, r in enumerate(rows)}
    complete = {i: p for i, p in points.items() if p is not None}
    return [i for i, p in complete.items() if not any(dominates(q, p) for q in complete.values())]


def random_rows(rng: random.Random, n: int, metrics: list[str]) -> list[dict]:
    rows = []
    for _ in range(n):
        # small integers make ties and exact duplicates common
        row = {m: float(rng.randint(0, 4)) for m in metrics}
        if rng.random() < 0.1:
            del row[rng.choice(metrics)]
        elif rng.random() < 0.1:
            row[rng.choice(metrics)] = math.nan
        rows.append(row)
    return rows


@pytest.mark.parametrize("seed", range(30))
def test_front_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    metrics = ["val/acc", "val/disagreement", "val/nll"][: rng.randint(1, 3)]
    modes = [rng.choice(["min", "max"]) for _ in metrics]
    rows = random_rows(rng, rng.randint(0, 40), metrics)
    assert pareto_front(rows, metrics, modes) == brute_front(rows, metrics, modes)


def test_identical_points_are_all_on_the_front() -> None:
    rows = [{"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 2.0}, {"a": 0.0, "b": 0.0}]
    assert pareto_front(rows, ["a", "b"], ["max", "max"]) == [0, 1]


def test_min_mode_and_missing_values() -> None:
    rows = [
        {"acc": 0.9, "nll": 0.5},
        {"acc": 0.8, "nll": 0.3},
        {"acc": 0.95},  # no nll: left out
        {"acc": 0.7, "nll": None},
        {"acc": 0.85, "nll": 0.6},  # dominated by row 0
        {"acc": np.float32(0.99), "nll": 0.9},  # numpy scalars count as numbers
    ]
    assert pareto_front(rows, ["acc", "nll"], ["max", "min"]) == [0, 1, 5]


def test_knee_point_is_the_balanced_trade_off() -> None:
    rows = [
        {"acc": 0.90, "div": 0.00},  # best accuracy, no diversity
        {"acc": 0.88, "div": 0.80},  # near the best of both: the knee
        {"acc": 0.50, "div": 1.00},  # most diverse, poor accuracy
        {"acc": 0.40, "div": 0.10},  # dominated
        {"acc": math.nan, "div": 2.0},  # excluded
    ]
    assert knee_point(rows, ["acc", "div"], ["max", "max"]) == 1


def test_knee_point_single_point_and_constant_metric() -> None:
    rows = [{"a": 1.0, "b": 5.0}, {"a": 2.0, "b": 5.0}, {"b": 9.0}]
    assert knee_point(rows, ["a", "b"], ["max", "max"]) == 1
    assert knee_point(rows, ["a", "b"], ["min", "max"]) == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="one mode per metric"):
        pareto_front([], ["a", "b"], ["max"])
    with pytest.raises(ValueError, match="min or max"):
        pareto_front([], ["a"], ["up"])
    with pytest.raises(ValueError, match="no row has every metric"):
        knee_point([{"a": math.nan}], ["a"], ["max"])
