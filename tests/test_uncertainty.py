"""The uncertainty metrics (mixmo_search/uncertainty.py) against their definitions, computed by
hand on small cases, and the rules they must keep on generated ones."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixmo_search.uncertainty import (
    adaptive_ece,
    augrc,
    aurc,
    coverage_at_risk,
    detection_metrics,
    entropy,
    mutual_information,
    ood_metrics,
    pairwise_disagreement,
    risk_at_coverage,
    risk_curve,
)

CONF = torch.tensor([0.9, 0.8, 0.7, 0.6])
ERRORS = torch.tensor([0.0, 1.0, 0.0, 1.0])  # wrong at ranks 2 and 4


def optimal_aurc(n: int, n_errors: int) -> float:
    """AURC when every error is less confident than every correct prediction: the risk at
    coverage k/N is max(0, k - (N - E)) / k (Geifman et al. 2019, the 'optimal' AURC)."""
    return sum(max(0, k - (n - n_errors)) / k for k in range(1, n + 1)) / n


def test_risk_curve_aurc_and_augrc_by_hand():
    assert risk_curve(CONF, ERRORS).tolist() == pytest.approx([0, 1 / 2, 1 / 3, 2 / 4])
    assert aurc(CONF, ERRORS) == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4)
    # accepted-and-wrong rate at k = 1..4: 0, 1/4, 1/4, 2/4
    assert augrc(CONF, ERRORS) == pytest.approx((0 + 1 / 4 + 1 / 4 + 2 / 4) / 4)


def test_tied_confidences_count_as_their_expectation_over_orders():
    # one right and one wrong at the same confidence: either order, equally likely
    assert risk_curve(torch.tensor([0.9, 0.9]), torch.tensor([0.0, 1.0])).tolist() == [0.5, 0.5]
    conf, errors = torch.tensor([0.7, 0.9, 0.9, 0.9]), torch.tensor([0.0, 1.0, 0.0, 0.0])
    assert risk_curve(conf, errors).tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 4])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=40))
def test_aurc_lies_between_the_perfect_and_the_worst_ranking(samples):
    conf = torch.tensor([c for c, _ in samples], dtype=torch.float64)
    errors = torch.tensor([float(e) for _, e in samples], dtype=torch.float64)
    n, n_errors = len(samples), int(errors.sum())
    worst = sum(min(k, n_errors) / k for k in range(1, n + 1)) / n  # errors most confident
    assert optimal_aurc(n, n_errors) - 1e-12 <= aurc(conf, errors) <= worst + 1e-12
    assert 0.0 <= augrc(conf, errors) <= aurc(conf, errors) + 1e-12


@pytest.mark.parametrize(("n", "n_errors"), [(10, 0), (10, 3), (50, 49), (1000, 250)])
def test_a_perfectly_ranked_classifier_reaches_the_optimal_aurc(n, n_errors):
    errors = torch.zeros(n)
    errors[n - n_errors :] = 1.0
    conf = torch.linspace(1.0, 0.1, n)  # decreasing: the errors are the least confident
    assert aurc(conf, errors) == pytest.approx(optimal_aurc(n, n_errors))


def test_optimal_aurc_approaches_its_closed_form_and_random_ranking_its_error_rate():
    n, rate = 20_000, 0.3
    errors = (torch.arange(n) >= n * (1 - rate)).double()
    ranked = aurc(torch.linspace(1.0, 0.0, n), errors)
    assert ranked == pytest.approx(rate + (1 - rate) * math.log(1 - rate), abs=1e-3)
    shuffled = aurc(torch.rand(n, generator=torch.Generator().manual_seed(0)), errors)
    assert shuffled == pytest.approx(rate, abs=0.01)  # no ranking: the risk at every coverage


def test_risk_at_coverage_and_coverage_at_risk_by_hand():
    n = 40
    errors = torch.zeros(n)
    errors[30:] = 1.0  # the 10 least confident are wrong
    conf = torch.linspace(1.0, 0.0, n)
    assert risk_at_coverage(conf, errors, 0.8) == pytest.approx(2 / 32)  # 32 taken, 2 wrong
    assert risk_at_coverage(conf, errors, 0.5) == 0.0
    # risk 1/31 <= 5 % at k = 31, 2/32 > 5 % from k = 32 on
    assert coverage_at_risk(conf, errors, 0.05) == pytest.approx(31 / 40)
    assert coverage_at_risk(conf, torch.ones(n), 0.05) == 0.0  # must abstain on everything
    assert coverage_at_risk(conf, torch.zeros(n), 0.05) == 1.0


def test_adaptive_ece_by_hand_and_with_one_bin():
    # confidences 0.6, 0.7 | 0.8, 0.9 in two equal bins; right, wrong | right, right
    probs = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.8, 0.2], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 0, 1])
    assert adaptive_ece(probs, labels, n_bins=2) == pytest.approx(
        0.5 * abs(0.5 - 0.65) + 0.5 * abs(1.0 - 0.85)
    )
    assert adaptive_ece(probs, labels, n_bins=1) == pytest.approx(abs(0.75 - 0.75))
    # five samples in two bins: sizes 3 and 2, in order of confidence
    probs5 = torch.tensor([[0.55, 0.45], [0.6, 0.4], [0.65, 0.35], [0.9, 0.1], [0.95, 0.05]])
    labels5 = torch.tensor([1, 0, 0, 0, 0])
    low = abs(2 / 3 - (0.55 + 0.6 + 0.65) / 3)
    assert adaptive_ece(probs5, labels5, n_bins=2) == pytest.approx(
        3 / 5 * low + 2 / 5 * abs(1 - 0.925)
    )


def test_entropy_mutual_information_and_disagreement_by_hand():
    assert entropy(torch.full((3, 4), 0.25)).tolist() == pytest.approx([math.log(4)] * 3)
    assert entropy(torch.eye(3)).tolist() == [0.0, 0.0, 0.0]
    sure = 50.0 * torch.eye(2)  # member 0 says class 0, member 1 class 1, both certain
    assert mutual_information(sure[:, None, :]).item() == pytest.approx(math.log(2))
    same = torch.randn(1, 5, 3).expand(3, -1, -1)
    assert mutual_information(same).tolist() == pytest.approx([0.0] * 5, abs=1e-12)
    assert mutual_information(torch.randn(1, 5, 3)).tolist() == [0.0] * 5  # one member
    votes = torch.nn.functional.one_hot(torch.tensor([[0], [0], [1]]), 2).float()  # (3, 1, 2)
    assert pairwise_disagreement(votes).tolist() == pytest.approx([2 / 3])


def test_detection_metrics_by_hand():
    found = detection_metrics(torch.tensor([0.9, 0.8, 0.4]), torch.tensor([0.5, 0.3]))
    assert found["auroc"] == pytest.approx(5 / 6)  # 5 of the 6 (in, out) pairs ordered
    # ranked: in, in, out, in, out -> precision at each in-distribution hit 1, 1, 3/4
    assert found["aupr_in"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    # negated: out, in, out, in, in -> precision at each OOD hit 1, 2/3
    assert found["aupr_out"] == pytest.approx((1 + 2 / 3) / 2)
    assert found["fpr95"] == pytest.approx(1 / 2)  # keeping all three lets 0.5 through


def test_a_perfect_detector_a_reversed_one_and_a_random_one():
    gen = torch.Generator().manual_seed(0)
    high, low = torch.rand(500, generator=gen) + 1.0, torch.rand(400, generator=gen)
    assert detection_metrics(high, low) == {
        "auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0
    }  # fmt: skip
    reversed_ = detection_metrics(low, high)
    assert reversed_["auroc"] == 0.0 and reversed_["fpr95"] == 1.0
    noise = detection_metrics(torch.rand(20_000, generator=gen), torch.rand(20_000, generator=gen))
    assert noise["auroc"] == pytest.approx(0.5, abs=0.01)
    assert noise["fpr95"] == pytest.approx(0.95, abs=0.01)
    assert noise["aupr_in"] == pytest.approx(0.5, abs=0.01)
    constant = detection_metrics(torch.zeros(10), torch.zeros(10))
    assert constant["auroc"] == 0.5 and constant["fpr95"] == 1.0  # a tie cannot be split


def test_one_member_has_no_mutual_information_or_disagreement_to_detect_with():
    gen = torch.Generator().manual_seed(1)
    found = ood_metrics(
        5 * torch.randn(1, 50, 4, generator=gen), torch.randn(1, 30, 4, generator=gen)
    )
    assert found["ood_auroc_mi"] == 0.5 and found["ood_auroc_disagreement"] == 0.5
    assert found["ood_auroc_msp"] > 0.5  # confident in-distribution logits: a real signal
    assert len(found) == 16
