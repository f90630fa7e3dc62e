from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mixmo_search.metrics import (
    brier,
    disagreement,
    ece,
    ensemble_logits,
    evaluate,
    fit_temperature,
    nll,
    ratio_error,
    topk_accuracy,
)

# Four samples, two classes, confidences away from the 1/15 bin edges:
# conf 0.90 right and 0.88 wrong share bin (13/15, 14/15]; 0.70 right; 0.55 wrong.
HAND_PROBS = torch.tensor([[0.90, 0.10], [0.12, 0.88], [0.30, 0.70], [0.55, 0.45]])
HAND_LABELS = torch.tensor([0, 0, 1, 1])
HAND_ECE = (2 / 4) * abs(0.5 - (0.90 + 0.88) / 2) + (1 / 4) * 0.30 + (1 / 4) * 0.55
HAND_BRIER = (0.02 + 2 * 0.88**2 + 2 * 0.30**2 + 2 * 0.55**2) / 4
HAND_NLL = -(math.log(0.90) + math.log(0.12) + math.log(0.70) + math.log(0.45)) / 4

# Binary task, every label 0, so a prediction of 1 is an error.
PREDS_3 = torch.tensor(
    [
        [1, 1, 0, 0, 1, 0],
        [1, 0, 1, 0, 1, 0],
        [0, 0, 0, 0, 1, 1],
    ]
)
LABELS_3 = torch.zeros(6, dtype=torch.long)


def expected_keys(prefix: str, n_members: int) -> set[str]:
    names = ["acc", "top5", "nll", "ece", "brier", "nll_ts", "ece_ts", "temperature"]
    names += [f"acc_member{k}" for k in range(n_members)]
    names += ["member_acc_mean", "ratio_error", "disagreement"]
    names += ["aece", "aurc", "augrc", "risk_at_80cov", "cov_at_5risk", "entropy", "mutual_info"]
    return {f"{prefix}/{name}" for name in names}


def test_hand_computed_ece_brier_nll():
    assert ece(HAND_PROBS, HAND_LABELS) == pytest.approx(HAND_ECE)
    assert brier(HAND_PROBS, HAND_LABELS) == pytest.approx(HAND_BRIER)
    assert nll(HAND_PROBS.log(), HAND_LABELS) == pytest.approx(HAND_NLL)


def test_metrics_accept_half_precision_and_return_floats():
    value = ece(HAND_PROBS.half(), HAND_LABELS)
    assert isinstance(value, float)
    assert value == pytest.approx(HAND_ECE, abs=1e-3)
    assert nll(HAND_PROBS.log().bfloat16(), HAND_LABELS) == pytest.approx(HAND_NLL, abs=1e-2)


def test_ece_matches_per_bin_definition_on_random_probs():
    gen = torch.Generator().manual_seed(5)
    probs = (3 * torch.randn(1_000, 7, generator=gen, dtype=torch.float64)).softmax(dim=1)
    labels = torch.randint(0, 7, (1_000,), generator=gen)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    expected = 0.0
    for low, high in zip(torch.arange(15) / 15, torch.arange(1, 16) / 15, strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            gap = (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
            expected += float(gap) * float(in_bin.double().mean())
    assert ece(probs, labels) == pytest.approx(expected)


def test_a_confidence_on_a_bin_edge_belongs_to_the_lower_bin():
    """Bins are right-closed, (b/15, (b+1)/15], as in Guo et al.: a confidence exactly on the
    edge 10/15 is binned with those below it, not with 0.7 in the bin above."""
    edge = torch.linspace(0.0, 1.0, 16, dtype=torch.float64)[10]
    probs = torch.tensor([[edge, 1 - edge], [0.7, 0.3]], dtype=torch.float64)
    labels = torch.tensor([0, 1])  # the edge sample right, the 0.7 one wrong
    assert ece(probs, labels) == pytest.approx((abs(edge - 1) + 0.7) / 2)


def test_ece_is_zero_when_confidence_matches_accuracy():
    # Two samples at confidence 0.5 in one bin, one right and one wrong.
    probs = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    assert ece(probs, torch.tensor([0, 1])) == pytest.approx(0.0)


def test_topk_accuracy_clips_k_to_class_count():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([1, 2])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(0.5)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(1.0)
    assert topk_accuracy(logits, labels, 5) == pytest.approx(1.0)


def test_ensemble_logits_is_mean_of_heads():
    member_logits = torch.tensor([[[1.0, 3.0]], [[3.0, -1.0]]])  # (2, 1, 2)
    assert torch.equal(ensemble_logits(member_logits), torch.tensor([[2.0, 1.0]]).double())


def test_ratio_error_and_disagreement_two_members():
    # Pair (0, 1): both err on samples 0 and 4, exactly one on 1 and 2; predictions differ on 1, 2.
    assert ratio_error(PREDS_3[:2], LABELS_3) == pytest.approx(2 / 2)
    assert disagreement(PREDS_3[:2]) == pytest.approx(2 / 6)


def test_ratio_error_and_disagreement_three_members_average_pairs():
    # Pairs (0,1): 2/2; (0,2): 3/1; (1,2): 3/1. Disagreements: 2/6, 3/6, 3/6.
    assert ratio_error(PREDS_3, LABELS_3) == pytest.approx((1 + 3 + 3) / 3)
    assert disagreement(PREDS_3, LABELS_3) == pytest.approx((2 + 3 + 3) / 18)


def test_both_wrong_in_different_ways_counts_as_shared_error_but_disagreement():
    preds = torch.tensor([[1, 0], [2, 0]])
    labels = torch.tensor([0, 0])
    assert ratio_error(preds, labels) == pytest.approx(0.0)
    assert disagreement(preds) == pytest.approx(0.5)


def test_ratio_error_without_shared_errors_divides_by_one():
    preds = torch.tensor([[1, 0, 1], [0, 1, 0]])
    assert ratio_error(preds, torch.zeros(3, dtype=torch.long)) == pytest.approx(3.0)


def test_single_member_has_zero_diversity():
    assert ratio_error(PREDS_3[:1], LABELS_3) == 0.0
    assert disagreement(PREDS_3[:1]) == 0.0


def calibrated_logits(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits z with labels drawn from softmax(z), so T = 1 is the true temperature."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, k, generator=gen, dtype=torch.float64)
    labels = torch.multinomial(logits.softmax(dim=1), 1, generator=gen).squeeze(1)
    return logits, labels


def test_fit_temperature_recovers_overconfidence():
    logits, labels = calibrated_logits(5_000, 10, seed=0)
    assert fit_temperature(2.0 * logits, labels) == pytest.approx(2.0, rel=0.05)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.05)


def test_fit_temperature_when_all_predictions_are_right_is_finite_and_lowers_nll():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    labels = logits.argmax(dim=1)
    temperature = fit_temperature(logits, labels)
    assert 0.0 < temperature < 1.0
    assert math.isfinite(temperature)
    assert nll(logits / temperature, labels) < nll(logits, labels)


def test_fit_temperature_is_deterministic():
    logits, labels = calibrated_logits(200, 5, seed=1)
    assert fit_temperature(3 * logits, labels) == fit_temperature(3 * logits, labels)


def test_evaluate_key_set_finite_values_and_scaled_nll_not_worse():
    logits, labels = calibrated_logits(2_000, 10, seed=2)
    gen = torch.Generator().manual_seed(3)
    member_logits = 3.0 * logits + torch.randn(3, *logits.shape, generator=gen)  # (3, N, K)
    metrics = evaluate(member_logits.float(), labels, prefix="val")
    assert set(metrics) == expected_keys("val", 3)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics["val/nll_ts"] <= metrics["val/nll"] + 1e-9
    assert metrics["val/temperature"] > 1.0  # the heads were made overconfident
    assert 0.0 <= metrics["val/acc"] <= metrics["val/top5"] <= 1.0
    assert metrics["val/member_acc_mean"] == pytest.approx(
        sum(metrics[f"val/acc_member{k}"] for k in range(3)) / 3
    )


def _hand_fitted_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The NLL-minimising T on a grid of log T, step 1e-4, then the best point's neighbours:
    an independent fit (no golden section), exact to about 1e-4 relative."""
    grid = torch.arange(math.log(0.2), math.log(10.0), 1e-4, dtype=torch.float64)
    losses = torch.stack(
        [F.cross_entropy(logits / t.exp(), labels) for t in grid.split(1)[::10]]
    )  # coarse pass over every 10th point, then the fine grid around its best
    best = int(losses.argmin()) * 10
    fine = grid[max(0, best - 10) : best + 11]
    losses = torch.stack([F.cross_entropy(logits / t.exp(), labels) for t in fine.split(1)])
    return float(fine[int(losses.argmin())].exp())


@pytest.mark.parametrize("overconfidence", [0.5, 2.5])
def test_temperature_scaled_metrics_use_a_hand_fitted_temperature(overconfidence):
    """On validation, `evaluate` fits T itself: it must be the hand-fitted NLL minimiser, and
    nll_ts and ece_ts the metrics of softmax(ensemble logits / T)."""
    logits, labels = calibrated_logits(3_000, 10, seed=6)
    gen = torch.Generator().manual_seed(7)
    member_logits = overconfidence * logits + 0.3 * torch.randn(3, *logits.shape, generator=gen)
    ensemble = member_logits.double().mean(0)
    hand = _hand_fitted_temperature(ensemble, labels)
    assert abs(math.log(hand) - math.log(overconfidence)) < 0.3  # the sanity of the fixture

    metrics = evaluate(member_logits, labels, prefix="val")
    assert metrics["val/temperature"] == pytest.approx(hand, rel=2e-4)
    scaled = ensemble / metrics["val/temperature"]
    assert metrics["val/nll_ts"] == pytest.approx(nll(scaled, labels), rel=1e-9)
    assert metrics["val/nll_ts"] == pytest.approx(nll(ensemble / hand, labels), abs=1e-7)
    assert metrics["val/ece_ts"] == pytest.approx(ece(scaled.softmax(1), labels), abs=1e-9)
    assert metrics["val/ece_ts"] < metrics["val/ece"] - 0.02  # scaling changed the ECE
    # the test split reuses the validation T (never fits its own)
    test = evaluate(member_logits[:, :1000], labels[:1000], prefix="test", temperature=hand)
    assert test["test/nll_ts"] == pytest.approx(nll(ensemble[:1000] / hand, labels[:1000]))
    assert test["test/ece_ts"] == pytest.approx(
        ece((ensemble[:1000] / hand).softmax(1), labels[:1000])
    )


def test_evaluate_uses_given_temperature():
    logits, labels = calibrated_logits(300, 4, seed=4)
    metrics = evaluate(logits[None], labels, prefix="test", temperature=2.0)
    assert set(metrics) == expected_keys("test", 1)
    assert metrics["test/temperature"] == 2.0
    assert metrics["test/nll_ts"] == pytest.approx(nll(logits / 2.0, labels))


def test_evaluate_matches_hand_example_for_one_member():
    metrics = evaluate(HAND_PROBS.log()[None], HAND_LABELS, prefix="val")
    assert metrics["val/acc"] == pytest.approx(0.5)
    assert metrics["val/acc_member0"] == pytest.approx(0.5)
    assert metrics["val/ece"] == pytest.approx(HAND_ECE)
    assert metrics["val/brier"] == pytest.approx(HAND_BRIER)
    assert metrics["val/nll"] == pytest.approx(HAND_NLL)
    assert metrics["val/ratio_error"] == 0.0


def test_evaluate_perfect_predictions():
    labels = torch.arange(10) % 5
    member_logits = 20.0 * torch.nn.functional.one_hot(labels, 5).float().expand(2, -1, -1)
    metrics = evaluate(member_logits, labels, prefix="val")
    assert metrics["val/acc"] == 1.0
    assert metrics["val/member_acc_mean"] == 1.0
    assert metrics["val/ece"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["val/ece_ts"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["val/disagreement"] == 0.0
    assert metrics["val/ratio_error"] == 0.0


def test_evaluate_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels must have shape"):
        evaluate(torch.zeros(2, 4, 3), torch.zeros(5, dtype=torch.long), prefix="val")
    with pytest.raises(ValueError, match=r"\(M, N, K\)"):
        evaluate(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), prefix="val")
