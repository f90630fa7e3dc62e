"""Ensembles across search trials, from their stored predictions.

The paper's "x3" rows and its deep-ensemble baselines average independently trained networks;
here any finished trials of a search can be ensembled, without re-running a network, from the
`predictions/{val,test}.npz` files the trainer stores. Each trial votes with the mean of its
heads' logits whatever its number of members, and the ensemble averages the votes, as one
MixMo network averages its heads (`metrics.ensemble_logits`); greedy selection may choose a
trial more than once, which weights its vote. Ensembles are chosen on validation only; test
metrics are reported for the chosen ensemble, never used to choose it. `ensemble_cost` adds
up what the members cost at inference. Ensembles of MixMo trials go beyond the paper.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mixmo_search.metrics import evaluate, nll, topk_accuracy
from mixmo_search.predictions import Predictions, combine

GREEDY_METRICS = {"nll": "min", "acc": "max"}  # what greedy selection may optimise
_IMPROVEMENT = 1e-9  # the least change of the score that counts as an improvement


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
    """Trials in the order greedy selection added them, the score after each, and why it
    stopped: at `max_size`, or because the best next addition did not improve the score."""

    order: list[int]  # indices into the candidates; a trial may come back (replacement)
    scores: list[float]  # validation metric of the ensemble after each addition
    metric: str
    max_size: int
    rejected: int | None = None  # the best next addition, when it did not improve the score
    rejected_score: float | None = None  # the score the ensemble would have had with it

    @property
    def weights(self) -> dict[int, int]:
        """{candidate: times chosen}: its weight in the ensemble's mean, out of len(order)."""
        return dict(Counter(self.order))

    def stop_reason(self, names: Sequence[str]) -> str:
        """Why selection stopped, naming candidates by `names`."""
        if self.rejected is None:
            return f"it reached the limit of {self.max_size} members"
        again = " again" if self.rejected in self.order else ""
        return (
            f"no addition improves validation {self.metric}: the best candidate, adding "
            f"{names[self.rejected]}{again}, gives {self.rejected_score:.4f} against "
            f"{self.scores[-1]:.4f} now"
        )


def greedy_selection(
    val: Sequence[Predictions], *, max_size: int, metric: str = "nll"
) -> GreedyPath:
    """Forward selection with replacement (Caruana et al. 2004) of an ensemble of trials.

    Starts from the best single trial on validation, then repeatedly adds the trial (possibly
    one already in: the mean then weights it more) that gives the best ensemble `metric`
    ("nll", lower is better, or "acc"); ties go to the lowest index. It stops when that best
    addition does not improve the score, or at `max_size` members, and says which.
    """
    if metric not in GREEDY_METRICS:
        raise ValueError(f"metric must be one of {sorted(GREEDY_METRICS)}, got {metric!r}")
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, got {max_size}")
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
    while len(order) < max_size:
        trial_scores = [score(summed + logits[t], len(order) + 1) for t in range(len(val))]
        best = min(range(len(val)), key=lambda t: (sign * trial_scores[t], t))
        # float noise of re-adding a trial is not an improvement
        if scores and sign * (trial_scores[best] - scores[-1]) > -_IMPROVEMENT:
            return GreedyPath(order, scores, metric, max_size, best, trial_scores[best])
        order.append(best)
        scores.append(trial_scores[best])
        summed += logits[best]
    return GreedyPath(order, scores, metric, max_size)


def ensemble_cost(costs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Inference cost of an ensemble from its members' `cost/*`: parameters and FLOPs add up,
    and the members run one after the other, so images/s is 1 / sum(1 / images/s)."""
    return {
        "cost/params": float(sum(c["cost/params"] for c in costs)),
        "cost/flops": float(sum(c["cost/flops"] for c in costs)),
        "cost/images_per_s": 1.0 / sum(1.0 / c["cost/images_per_s"] for c in costs),
    }
