"""Uncertainty of docs/method.md §Uncertainty: per-sample scores, selective prediction, adaptive
calibration and out-of-distribution detection, from the heads' logits.

Per-sample scores are (N,) float64 tensors on the logits' device; the summary functions return
Python floats (one host sync each). Risk-coverage figures (AURC, AUGRC, risk at a coverage,
coverage at a risk) rank samples by confidence; samples of equal confidence are taken in a
random order and every figure is its expectation over that order (the cumulative error count
is linear across a run of ties), so a confidence that saturates at 1.0 for many samples is
neither rewarded nor punished by how a sort happens to order them.

Detection figures use scikit-learn's ROC and precision-recall code (already a dependency) on
the host: `roc_auc_score`, `average_precision_score` and `roc_curve`, tie-aware as they are.
The in-distribution samples are the positive class and a score is higher for samples that
look in-distribution (Hendrycks & Gimpel 2017).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

ADAPTIVE_BINS = 15  # as the fixed-width ECE (metrics.ece), with equal-count bins
SELECTIVE_COVERAGE = 0.8  # risk at 80 % coverage
SELECTIVE_RISK = 0.05  # coverage at 5 % risk
DETECTION_TPR = 0.95  # FPR95: OOD accepted when 95 % of in-distribution samples are
# The OOD scores, each higher for samples that look in-distribution
OOD_SCORES = ("msp", "entropy", "mi", "disagreement")
DETECTION_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def member_probs(member_logits: Tensor) -> Tensor:
    """(M, N, K) logits -> (M, N, K) float64 softmax of each head."""
    return member_logits.double().softmax(dim=2)


def ensemble_probs(member_logits: Tensor) -> Tensor:
    """(M, N, K) -> (N, K): softmax of the mean logits, the ensemble's prediction
    (metrics.ensemble_logits)."""
    return member_logits.double().mean(dim=0).softmax(dim=1)


def entropy(probs: Tensor) -> Tensor:
    """(..., K) probabilities -> (...) Shannon entropy in nats (0 log 0 = 0)."""
    probs = probs.double()
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def mutual_information(member_logits: Tensor) -> Tensor:
    """(M, N, K) -> (N,): H[mean_k p_k] - mean_k H[p_k], the members' disagreement in
    distribution (the epistemic part of the entropy of their mixture; Depeweg et al. 2018).
    Zero for one member; clamped at 0 against rounding (it is >= 0 by Jensen)."""
    probs = member_probs(member_logits)
    return (entropy(probs.mean(dim=0)) - entropy(probs).mean(dim=0)).clamp(min=0.0)


def pairwise_disagreement(member_logits: Tensor) -> Tensor:
    """(M, N, K) -> (N,): the fraction of member pairs whose predicted classes differ, per
    sample (its mean over samples is metrics.disagreement). Zero for one member."""
    n_members = member_logits.shape[0]
    if n_members < 2:
        return torch.zeros(
            member_logits.shape[1], dtype=torch.float64, device=member_logits.device
        )
    preds = member_logits.argmax(dim=2)  # (M, N)
    first, second = torch.triu_indices(n_members, n_members, offset=1, device=preds.device)
    return (preds[first] != preds[second]).double().mean(dim=0)


def ood_scores(member_logits: Tensor) -> dict[str, Tensor]:
    """(N,) scores of OOD_SCORES, each higher for samples that look in-distribution: the
    ensemble's max-softmax, minus its entropy, minus the members' mutual information, minus
    their pairwise disagreement."""
    probs = ensemble_probs(member_logits)
    return {
        "msp": probs.max(dim=1).values,
        "entropy": -entropy(probs),
        "mi": -mutual_information(member_logits),
        "disagreement": -pairwise_disagreement(member_logits),
    }


# --- selective prediction: accept the most confident samples, abstain on the rest ---


def risk_curve(confidence: Tensor, errors: Tensor) -> Tensor:
    """(N,) risk at coverage k/N, k = 1..N: the expected error rate among the k most
    confident samples, ties in confidence in random order (Geifman & El-Yaniv 2017)."""
    confidence, errors = confidence.double(), errors.double()
    order = confidence.argsort(descending=True)
    sorted_conf, sorted_err = confidence[order], errors[order]
    _, group, sizes = sorted_conf.unique_consecutive(return_inverse=True, return_counts=True)
    group_errors = torch.zeros_like(sizes, dtype=torch.float64).index_add_(0, group, sorted_err)
    starts = sizes.cumsum(0) - sizes  # first position of each run of ties
    errors_before = group_errors.cumsum(0) - group_errors
    position = torch.arange(len(errors), device=errors.device)
    taken = (position - starts[group] + 1).double()  # samples of its run taken so far
    expected_errors = errors_before[group] + taken * group_errors[group] / sizes[group]
    return expected_errors / (position + 1).double()


def aurc(confidence: Tensor, errors: Tensor) -> float:
    """Area under the risk-coverage curve, (1/N) sum_k risk(k/N) (Geifman et al. 2019)."""
    return float(risk_curve(confidence, errors).mean())


def augrc(confidence: Tensor, errors: Tensor) -> float:
    """Area under the generalised risk-coverage curve, (1/N) sum_k (k/N) risk(k/N): the rate
    of accepted *and* wrong samples (Traub et al. 2024)."""
    risk = risk_curve(confidence, errors)
    coverage = torch.arange(1, len(risk) + 1, device=risk.device).double() / len(risk)
    return float((coverage * risk).mean())


def risk_at_coverage(confidence: Tensor, errors: Tensor, coverage: float) -> float:
    """Error rate among the ceil(coverage * N) most confident samples."""
    risk = risk_curve(confidence, errors)
    return float(risk[max(math.ceil(coverage * len(risk)), 1) - 1])


def coverage_at_risk(confidence: Tensor, errors: Tensor, risk: float) -> float:
    """The largest coverage k/N whose risk is at most `risk`; 0 when even the most confident
    sample's risk exceeds it (the classifier must abstain on everything)."""
    curve = risk_curve(confidence, errors)
    admissible = (curve <= risk + 1e-12).nonzero()  # float slack: a risk of exactly `risk`
    return float((admissible.max() + 1) / len(curve)) if len(admissible) else 0.0


def adaptive_ece(probs: Tensor, labels: Tensor, n_bins: int = ADAPTIVE_BINS) -> float:
    """ECE over `n_bins` bins holding equal numbers of samples (sizes differ by at most one),
    in order of confidence (Nixon et al. 2019): sum_b |B_b|/N |acc(B_b) - conf(B_b)|."""
    probs = probs.double()
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels.long()).double()
    n = len(confidence)
    rank = torch.empty_like(predicted)
    rank[confidence.argsort(stable=True)] = torch.arange(n, device=probs.device)
    bin_index = rank * n_bins // n  # (N,) equal-count bins
    in_bin = torch.nn.functional.one_hot(bin_index, n_bins).double()  # (N, n_bins)
    return float(((confidence - correct) @ in_bin).abs().sum() / n)


def selective_metrics(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """The selective-prediction metrics of (N, K) predicted probabilities, confidence = their
    max (for the ensemble: its max-softmax)."""
    confidence, predicted = probs.double().max(dim=1)
    errors = (predicted != labels.long()).double()
    return {
        "aurc": aurc(confidence, errors),
        "augrc": augrc(confidence, errors),
        "risk_at_80cov": risk_at_coverage(confidence, errors, SELECTIVE_COVERAGE),
        "cov_at_5risk": coverage_at_risk(confidence, errors, SELECTIVE_RISK),
    }


# --- out-of-distribution detection: in-distribution samples are the positives ---


def detection_metrics(score_in: Tensor, score_out: Tensor) -> dict[str, float]:
    """AUROC, AUPR-in (in-distribution positive), AUPR-out (OOD positive, scores negated) and
    FPR95 (the fraction of OOD samples accepted at the threshold that keeps 95 % of the
    in-distribution ones) of a score that is higher in-distribution."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    scores = torch.cat([score_in, score_out]).double().cpu().numpy()
    is_in = np.concatenate([np.ones(len(score_in)), np.zeros(len(score_out))])
    fpr, tpr, _ = roc_curve(is_in, scores, drop_intermediate=False)
    return {
        "auroc": float(roc_auc_score(is_in, scores)),
        "aupr_in": float(average_precision_score(is_in, scores)),
        "aupr_out": float(average_precision_score(1 - is_in, -scores)),
        "fpr95": float(fpr[np.argmax(tpr >= DETECTION_TPR)]),
    }


def ood_metrics(member_logits_in: Tensor, member_logits_out: Tensor) -> dict[str, float]:
    """`ood_<metric>_<score>` for every detection metric and OOD score, from the heads' logits
    on in-distribution (M, N, K) and OOD (M, N_ood, K) images."""
    scores_in, scores_out = ood_scores(member_logits_in), ood_scores(member_logits_out)
    return {
        f"ood_{metric}_{score}": value
        for score in OOD_SCORES
        for metric, value in detection_metrics(scores_in[score], scores_out[score]).items()
    }


OOD_METRICS = tuple(f"ood_{m}_{s}" for s in OOD_SCORES for m in DETECTION_METRICS)
