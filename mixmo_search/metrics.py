"""Metrics of docs/method.md §Metrics: accuracy, NLL, ECE, Brier, temperature scaling, diversity,
and the uncertainty of §Uncertainty (uncertainty.py: adaptive ECE, selective prediction,
entropy, mutual information).

Every function takes tensors on any device and returns a Python float. Inputs are cast to
float64 first, so bf16/fp16 logits from autocast are never averaged or soft-maxed in low
precision. Each returned float is one host sync; `evaluate` makes about a dozen per split and
epoch, which is negligible next to the forward passes that produced the logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mixmo_search.uncertainty import (
    OOD_METRICS,
    adaptive_ece,
    entropy,
    mutual_information,
    selective_metrics,
)

# What `evaluate` reports for a split (keys `f"{split}/{name}"`), besides one `acc_member{k}`
# per member; and what the trainer reports of each training epoch. Search objectives must be
# among these, so a typo fails when the space loads, not after a trial's first epoch.
SPLIT_METRICS = ("acc", "top5", "nll", "ece", "brier", "nll_ts", "ece_ts", "temperature",
                 "member_acc_mean", "ratio_error", "disagreement",
                 "aece", "aurc", "augrc", "risk_at_80cov", "cov_at_5risk", "entropy",
                 "mutual_info")  # fmt: skip
TRAIN_METRICS = ("loss", "acc", "slots_per_s")
# What a split reports when its config names corrupted or OOD images (robustness.py): the
# means over corruptions and severities, and each OOD score's detection metrics
ROBUSTNESS_METRICS = ("corrupt_acc", "corrupt_nll", "corrupt_ece", "corrupt_rel_acc",
                      *OOD_METRICS)  # fmt: skip
# Golden-section search bounds on log T: T in [0.01, 100] covers any temperature a trained
# network needs; all-correct, separable logits run to the lower bound, which is still finite.
_LOG_T_LOW, _LOG_T_HIGH = math.log(1e-2), math.log(1e2)
_GOLDEN_STEPS = 48  # shrinks the bracket by 0.618^48 ~ 1e-10, below float noise in T
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def ensemble_logits(member_logits: Tensor) -> Tensor:
    """(M, N, K) -> (N, K): the mean of the heads' logits.

    The reference implementation (mixmo-pytorch) averages logits, not probabilities as MIMO
    does; docs/method.md §Inference says which (the paper leaves it open).
    """
    if member_logits.dim() != 3:
        raise ValueError(
            f"member_logits must be (M, N, K), got shape {tuple(member_logits.shape)}"
        )
    return member_logits.double().mean(dim=0)


def nll(logits: Tensor, labels: Tensor) -> float:
    """Mean negative log-likelihood of softmax(logits), (N, K) logits and (N,) labels."""
    return float(F.cross_entropy(logits.double(), labels.long()))


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T) on these samples.

    NLL is convex in 1/T, hence unimodal in log T, so a golden-section search over log T in
    [0.01, 100] finds the minimum deterministically, with no learning rate or initial guess to
    tune. Already-calibrated logits give T ~ 1; when every prediction is right the NLL keeps
    falling as T -> 0 and the search stops at the lower bound, T = 0.01.
    """
    logits, labels = logits.double(), labels.long()

    def nll_at(log_t: Tensor) -> Tensor:
        return F.cross_entropy(logits / log_t.exp(), labels)

    # 0-d tensors on the logits' device and torch.where keep the search free of host syncs.
    low = torch.tensor(_LOG_T_LOW, dtype=torch.float64, device=logits.device)
    high = torch.tensor(_LOG_T_HIGH, dtype=torch.float64, device=logits.device)
    for _ in range(_GOLDEN_STEPS):
        left = high - _INV_PHI * (high - low)
        right = low + _INV_PHI * (high - low)
        minimum_is_left = nll_at(left) <= nll_at(right)
        high = torch.where(minimum_is_left, right, high)
        low = torch.where(minimum_is_left, low, left)
    return float(((low + high) / 2).exp())


def ece(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """Expected calibration error with `n_bins` equal-width confidence bins (Guo et al. 2017).

    Bin b holds samples whose top probability lies in (b/n_bins, (b+1)/n_bins]; ECE is the
    sample-weighted mean over bins of |accuracy - mean confidence|.
    """
    probs = probs.double()
    confidence, predicted = probs.max(dim=1)  # (N,)
    correct = (predicted == labels.long()).double()
    inner_edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=probs.device)
    bin_index = torch.bucketize(confidence, inner_edges[1:-1])  # right-closed bins, as in Guo
    # A one-hot matmul instead of index_add_: CUDA atomics would make the sum order vary.
    in_bin = F.one_hot(bin_index, n_bins).double()  # (N, n_bins)
    gap_sums = (confidence - correct) @ in_bin  # (n_bins,)
    return float(gap_sums.abs().sum() / probs.shape[0])


def brier(probs: Tensor, labels: Tensor) -> float:
    """Mean over samples of the squared distance between `probs` and the one-hot label."""
    probs = probs.double()
    one_hot = F.one_hot(labels.long(), probs.shape[1]).double()
    return float((probs - one_hot).pow(2).sum(dim=1).mean())


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of samples whose label is among the k largest logits (k clipped to K)."""
    k = min(k, logits.shape[1])
    top = logits.double().topk(k, dim=1).indices  # (N, k)
    return float((top == labels.long()[:, None]).any(dim=1).double().mean())


def _member_pairs(n_members: int, device: torch.device) -> tuple[Tensor, Tensor]:
    first, second = torch.triu_indices(n_members, n_members, offset=1, device=device)
    return first, second  # (P,) each, P = M(M-1)/2


def ratio_error(member_preds: Tensor, labels: Tensor) -> float:
    """Ratio-error (Aksela 2003): per member pair, samples where exactly one errs over samples
    where both err, averaged over all pairs. Higher means more diverse errors.

    When a pair shares no error the ratio is infinite; we divide by max(both, 1), i.e. score it
    as if one error were shared, which stays finite for JSON and keeps the value continuous
    with the one-shared-error case. (The reference code returns 2 * single / N there.) Zero
    for a single member, which has no pairs.
    """
    n_members = member_preds.shape[0]
    if n_members < 2:
        return 0.0
    errors = member_preds.long() != labels.long()[None, :]  # (M, N)
    first, second = _member_pairs(n_members, member_preds.device)
    single = (errors[first] ^ errors[second]).sum(dim=1).double()  # (P,)
    both = (errors[first] & errors[second]).sum(dim=1).double()
    return float((single / both.clamp(min=1.0)).mean())


def disagreement(member_preds: Tensor, labels: Tensor | None = None) -> float:
    """Mean over member pairs of the fraction of samples where their predicted classes differ.

    `labels` is accepted so both diversity functions share a signature, and is not needed.
    Zero for a single member.
    """
    n_members = member_preds.shape[0]
    if n_members < 2:
        return 0.0
    first, second = _member_pairs(n_members, member_preds.device)
    return float((member_preds[first] != member_preds[second]).double().mean())


def evaluate(
    member_logits: Tensor, labels: Tensor, *, prefix: str, temperature: float | None = None
) -> dict[str, float]:
    """All reported metrics of one split, keyed `f"{prefix}/<metric>"`.

    Ensemble metrics use softmax of the mean logits. `temperature` None fits T on these very
    logits (the validation split); the test split passes the validation T, so its `nll_ts` and
    `ece_ts` never see test labels. Member accuracies are keyed `acc_member0`, `acc_member1`...
    """
    logits = ensemble_logits(member_logits)  # (N, K)
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"labels must have shape ({logits.shape[0]},) to match member_logits "
            f"{tuple(member_logits.shape)}, got {tuple(labels.shape)}"
        )
    labels = labels.long()
    probs = logits.softmax(dim=1)
    if temperature is None:
        temperature = fit_temperature(logits, labels)
    scaled_logits = logits / temperature
    member_preds = member_logits.argmax(dim=2)  # (M, N)
    member_accs = (member_preds == labels).double().mean(dim=1).tolist()  # one host sync
    metrics = {
        "acc": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "nll": nll(logits, labels),
        "ece": ece(probs, labels),
        "brier": brier(probs, labels),
        "nll_ts": nll(scaled_logits, labels),
        "ece_ts": ece(scaled_logits.softmax(dim=1), labels),
        "temperature": float(temperature),
        **{f"acc_member{k}": acc for k, acc in enumerate(member_accs)},
        "member_acc_mean": sum(member_accs) / len(member_accs),
        "ratio_error": ratio_error(member_preds, labels),
        "disagreement": disagreement(member_preds),
        # docs/method.md §Uncertainty: confidence and entropy of the ensemble's prediction
        "aece": adaptive_ece(probs, labels),
        **selective_metrics(probs, labels),
        "entropy": float(entropy(probs).mean()),
        "mutual_info": float(mutual_information(member_logits).mean()),
    }
    return {f"{prefix}/{name}": value for name, value in metrics.items()}
