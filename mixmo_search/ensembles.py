"""Ensembles across search trials, from their stored predictions. Beyond the paper.

The paper's "x3" rows ensemble independently trained networks; here any finished trials of a
search can be ensembled, without re-running a network, from the `predictions/{val,test}.npz`
files the trainer stores. Each trial votes once, with the mean of its heads' logits whatever
its number of members, and the ensemble averages the trials' logits, as one MixMo network
averages its heads (`metrics.ensemble_logits`). Ensembles are chosen on validation only; test
metrics are reported for the chosen ensemble, never used to choose it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mixmo_search.metrics import evaluate, nll, topk_accuracy
from mixmo_search.predictions import Predictions, combine

GREEDY_METRICS = {"nll": "min", "acc": "max"}  # what greedy selection may optimise


def trial_vote(preds: Predictions) -> Predictions:
    """A trial as one member: its heads' (1, N, K) mean logits."""
    return Predictions(
        member_logits=preds.ensemble_logits[None],
        labels=preds.labels,
        sample_ids=preds.sample_ids,
        split=preds.split,
    )


def _votes(preds: Sequence[Predictions]) -> Predictions:
    """The trials' votes stacked as members, checked to cover the same samples."""
    return combine([trial_vote(p) for p in preds])


def ensemble_metrics(
    preds: Sequence[Predictions], *, prefix: str, temperature: float | None = None
) -> dict[str, float]:
    """`metrics.evaluate` of the trials' ensemble, keyed `f"{prefix}/<metric>"`.

    Members are trials here: `acc_member{k}` is trial k's accuracy and `disagreement`,
    `ratio_error` measure the diversity between the trials. `temperature` None fits T on these
    predictions (validation); pass the validation T for the test split.
    """
    votes = _votes(preds)
    return evaluate(
        torch.from_numpy(votes.member_logits),
        torch.from_numpy(votes.labels.astype(np.int64)),
        prefix=prefix,
        temperature=temperature,
    )


def evaluate_ensemble(val: Sequence[Predictions], test: Sequence[Predictions]) -> dict[str, float]:
    """Validation metrics (T fitted there) and test metrics at the validation temperature."""
    val_metrics = ensemble_metrics(val, prefix="val")
    test_metrics = ensemble_metrics(
        test, prefix="test", temperature=val_metrics["val/temperature"]
    )
    return {**val_metrics, **test_metrics}


@dataclass(frozen=True)
class GreedyPath:
    """Trials in the order greedy selection added them, and the ensemble's score after each."""

    order: list[int]  # indices into the candidates
    scores: list[float]  # validation metric of the first 1, 2, ..., k picks
    metric: str


def greedy_selection(val: Sequence[Predictions], *, k: int, metric: str = "nll") -> GreedyPath:
    """Forward selection without replacement (Caruana et al. 2004) of a k-trial ensemble.

    Starts from the best single trial on validation and adds, k - 1 times, the trial that
    gives the best ensemble `metric` ("nll", lower is better, or "acc"); ties go to the lowest
    index. All k steps are taken, so `scores` shows whether a larger ensemble still helps.
    """
    if metric not in GREEDY_METRICS:
        raise ValueError(f"metric must be one of {sorted(GREEDY_METRICS)}, got {metric!r}")
    if not 1 <= k <= len(val):
        raise ValueError(f"k must be between 1 and the {len(val)} candidate trials, got {k}")
    votes = _votes(val)
    logits = torch.from_numpy(votes.member_logits).double()  # (T, N, K)
    labels = torch.from_numpy(votes.labels.astype(np.int64))
    sign = 1.0 if GREEDY_METRICS[metric] == "min" else -1.0

    def score(summed: torch.Tensor, size: int) -> float:
        mean = summed / size
        return nll(mean, labels) if metric == "nll" else topk_accuracy(mean, labels, 1)

    order: list[int] = []
    scores: list[float] = []
    summed = torch.zeros_like(logits[0])
    for size in range(1, k + 1):
        candidates = [t for t in range(len(val)) if t not in order]
        trial_scores = [score(summed + logits[t], size) for t in candidates]
        best = min(range(len(candidates)), key=lambda i: (sign * trial_scores[i], i))
        order.append(candidates[best])
        scores.append(trial_scores[best])
        summed += logits[candidates[best]]
    return GreedyPath(order=order, scores=scores, metric=metric)
