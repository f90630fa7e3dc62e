from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mixmo_search.ensembles import (
    ensemble_cost,
    ensemble_metrics,
    evaluate_ensemble,
    greedy_selection,
    trial_vote,
)
from mixmo_search.metrics import evaluate, nll, topk_accuracy
from mixmo_search.predictions import Predictions

N_SAMPLES, N_CLASSES = 200, 5


def labels_for(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, N_CLASSES, N_SAMPLES).astype(np.uint8)


def trial(seed: int, *, n_members: int = 2, skill: float = 2.0, split: str = "val") -> Predictions:
    """A trial whose heads put `skill` extra logit on the true class, plus noise."""
    rng = np.random.default_rng(seed)
    labels = labels_for()
    logits = rng.normal(size=(n_members, N_SAMPLES, N_CLASSES))
    logits[:, np.arange(N_SAMPLES), labels] += skill
    return Predictions(
        member_logits=logits.astype(np.float16),
        labels=labels,
        sample_ids=np.arange(N_SAMPLES),
        split=split,
    )


def test_trial_vote_is_the_mean_of_the_heads():
    preds = trial(0, n_members=3)
    vote = trial_vote(preds)
    assert vote.n_members == 1
    np.testing.assert_allclose(vote.member_logits[0], preds.ensemble_logits)
    np.testing.assert_array_equal(vote.labels, preds.labels)


def test_one_trial_ensemble_matches_the_trial():
    preds = trial(1, n_members=3)
    got = ensemble_metrics([preds], prefix="val")
    mean = torch.from_numpy(preds.ensemble_logits)[None]
    want = evaluate(mean, torch.from_numpy(preds.labels), prefix="val")
    assert got == pytest.approx(want)
    assert got["val/disagreement"] == 0.0


def test_each_trial_votes_once_whatever_its_members():
    big, small = trial(2, n_members=3), trial(3, n_members=1)
    got = ensemble_metrics([big, small], prefix="val")
    mean = (big.ensemble_logits.astype(np.float64) + small.ensemble_logits) / 2
    labels = torch.from_numpy(big.labels.astype(np.int64))
    assert got["val/acc"] == pytest.approx(topk_accuracy(torch.from_numpy(mean), labels, 1))
    assert got["val/nll"] == pytest.approx(nll(torch.from_numpy(mean), labels))
    assert {k for k in got if "acc_member" in k} == {"val/acc_member0", "val/acc_member1"}
    assert got["val/disagreement"] > 0


def test_test_split_uses_the_validation_temperature():
    val = [trial(4), trial(5)]
    test = [replace(p, split="test") for p in (trial(6), trial(7))]
    got = evaluate_ensemble(val, test)
    assert got["test/temperature"] == pytest.approx(got["val/temperature"])
    assert {"val/acc", "val/nll", "test/acc", "test/nll", "test/nll_ts"} <= got.keys()


def test_mismatched_samples_are_refused():
    other = replace(trial(8), sample_ids=np.arange(1, N_SAMPLES + 1))
    with pytest.raises(ValueError, match="sample_ids mismatch"):
        ensemble_metrics([trial(9), other], prefix="val")


def caruana_reference(candidates: list[Predictions], max_size: int) -> tuple[list[int], bool]:
    """Forward selection with replacement on validation NLL, by brute force over
    `ensemble_metrics`: (chosen candidates, whether it stopped for lack of improvement)."""
    chosen: list[int] = []
    current = float("inf")
    while len(chosen) < max_size:
        scores = [
            ensemble_metrics([candidates[i] for i in [*chosen, t]], prefix="val")["val/nll"]
            for t in range(len(candidates))
        ]
        best = int(np.argmin(scores))
        if scores[best] >= current - 1e-6:
            return chosen, True
        chosen.append(best)
        current = scores[best]
    return chosen, False


@pytest.mark.parametrize("metric", ["nll", "acc"])
def test_greedy_starts_from_the_best_trial_and_scores_its_ensemble(metric):
    candidates = [trial(10 + i, skill=skill) for i, skill in enumerate([2.0, 1.8, 1.6])]
    path = greedy_selection(candidates, max_size=10, metric=metric)
    singles = [ensemble_metrics([c], prefix="val")[f"val/{metric}"] for c in candidates]
    best_single = int(np.argmin(singles) if metric == "nll" else np.argmax(singles))
    assert path.order[0] == best_single
    assert path.scores[0] == pytest.approx(singles[best_single])
    for size in range(1, len(path.order) + 1):  # each score is its ensemble's, repeats counted
        chosen = [candidates[t] for t in path.order[:size]]
        assert path.scores[size - 1] == pytest.approx(
            ensemble_metrics(chosen, prefix="val")[f"val/{metric}"], abs=1e-6
        )
    sign = 1 if metric == "nll" else -1
    assert all(sign * (b - a) < 0 for a, b in zip(path.scores, path.scores[1:], strict=False))


def test_greedy_follows_brute_force_and_reuses_a_trial():
    candidates = [trial(10 + i, skill=skill) for i, skill in enumerate([2.0, 1.8, 1.6])]
    path = greedy_selection(candidates, max_size=10, metric="nll")
    chosen, stopped = caruana_reference(candidates, max_size=10)
    assert path.order == chosen and stopped
    assert len(set(path.order)) < len(path.order), "this case needs a trial twice"
    assert sum(path.weights.values()) == len(path.order)


def test_greedy_stops_when_an_addition_would_worsen_the_ensemble():
    good, weak = trial(40, skill=3.0), trial(41, skill=0.5)
    path = greedy_selection([weak, good], max_size=5, metric="nll")
    assert path.order == [1]  # the weak trial would raise the NLL; the good one again, keep it
    assert path.rejected is not None and path.rejected_score >= path.scores[-1]
    with_weak = ensemble_metrics([good, weak], prefix="val")["val/nll"]
    assert with_weak > path.scores[-1]
    reason = path.stop_reason(["weak", "good"])
    assert reason.startswith("no addition improves validation nll")
    assert f"{path.scores[-1]:.4f} now" in reason


def test_greedy_stops_at_the_limit_and_says_so():
    candidates = [trial(10 + i, skill=skill) for i, skill in enumerate([2.0, 1.8, 1.6])]
    path = greedy_selection(candidates, max_size=2, metric="nll")
    assert len(path.order) == 2 and path.rejected is None
    assert path.stop_reason(["a", "b", "c"]) == "it reached the limit of 2 members"


def test_greedy_prefers_a_diverse_partner_to_a_copy():
    best = trial(20, skill=2.5)
    copy = replace(best)
    diverse = trial(21, skill=2.3)
    path = greedy_selection([best, copy, diverse], max_size=2)
    assert path.order == [0, 2]


def test_greedy_rejects_bad_arguments():
    candidates = [trial(30), trial(31)]
    with pytest.raises(ValueError, match="max_size must be at least 1"):
        greedy_selection(candidates, max_size=0)
    with pytest.raises(ValueError, match="metric must be one of"):
        greedy_selection(candidates, max_size=1, metric="ece")


def test_ensemble_cost_adds_up_the_members():
    members = [
        {"cost/params": 10.0, "cost/flops": 100.0, "cost/images_per_s": 200.0},
        {"cost/params": 30.0, "cost/flops": 300.0, "cost/images_per_s": 50.0},
    ]
    cost = ensemble_cost(members)
    assert cost["cost/params"] == 40.0 and cost["cost/flops"] == 400.0
    assert cost["cost/images_per_s"] == pytest.approx(40.0)  # 1 / (1/200 + 1/50)
