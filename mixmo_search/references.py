"""Published uncertainty figures beside the presets they match (docs/method.md §Published).

google/uncertainty-baselines reports WRN-28-10 on CIFAR-10 and CIFAR-100 with accuracy, NLL,
calibration error and the same on corrupted test images (baselines/cifar/README.md, commit
054e27f). Each entry is attached to the reference preset of the same method and network; where
the recipe differs (members, epochs, averaging) its `note` says how. Their protocol is this
project's `run.protocol=paper`: the whole training set, the last epoch, on test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SOURCE = (
    "google/uncertainty-baselines, baselines/cifar/README.md (WRN-28-10), commit 054e27f; "
    "corrupted figures are means over corruption types and severities 1-5"
)
CORRUPTED_CIFAR10 = "CIFAR-10-C (Hendrycks & Dietterich 2019), 15 corruptions"
CORRUPTED_CIFAR100 = (
    "uncertainty-baselines' own corrupted CIFAR-100 (the CIFAR-10-C corruptions applied to "
    "CIFAR-100), not Hendrycks' CIFAR-100-C"
)


@dataclass(frozen=True)
class Reference:
    """One published row: test metrics as fractions (acc) or nats (nll) or ECE."""

    method: str
    metrics: dict[str, float]
    note: str
    corrupted_set: str
    source: str = field(default=SOURCE)


def _row(acc: float, nll: float, ece: float, c_acc: float, c_nll: float, c_ece: float):
    return {"test/acc": acc, "test/nll": nll, "test/ece": ece, "test/corrupt_acc": c_acc,
            "test/corrupt_nll": c_nll, "test/corrupt_ece": c_ece}  # fmt: skip


_ENSEMBLE_NOTE = (
    "4 independently trained deterministic networks, probabilities averaged: the k = 4 deep "
    "ensemble of this search's vanilla trials"
)
_MIMO_NOTE = (
    "MIMO with M = 3 members, 250 epochs, probabilities averaged (this preset: M = 2, 300 "
    "epochs, logits averaged)"
)
REFERENCES: dict[str, tuple[Reference, ...]] = {
    "cifar10_vanilla": (
        Reference("Deterministic", _row(0.960, 0.159, 0.0231, 0.761, 1.05, 0.153),
                  "one WRN-28-10, 200 epochs", CORRUPTED_CIFAR10),
        Reference("Ensemble (size 4)", _row(0.966, 0.114, 0.010, 0.779, 0.81, 0.087),
                  _ENSEMBLE_NOTE, CORRUPTED_CIFAR10),
    ),
    "cifar10_mimo": (
        Reference("MIMO", _row(0.964, 0.123, 0.010, 0.766, 0.927, 0.112), _MIMO_NOTE,
                  CORRUPTED_CIFAR10),
    ),
    "cifar100_vanilla": (
        Reference("Deterministic", _row(0.798, 0.875, 0.0857, 0.5137, 2.70, 0.239),
                  "one WRN-28-10, 200 epochs", CORRUPTED_CIFAR100),
        Reference("Ensemble (size 4)", _row(0.827, 0.666, 0.021, 0.541, 2.27, 0.138),
                  _ENSEMBLE_NOTE, CORRUPTED_CIFAR100),
    ),
    "cifar100_mimo": (
        Reference("MIMO", _row(0.820, 0.690, 0.022, 0.537, 2.28, 0.129), _MIMO_NOTE,
                  CORRUPTED_CIFAR100),
    ),
}  # fmt: skip


def references(preset: str) -> tuple[Reference, ...]:
    """The published uncertainty rows that match `preset` (none for most presets)."""
    return REFERENCES.get(preset, ())
