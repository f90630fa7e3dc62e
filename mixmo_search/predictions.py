"""Compact per-sample prediction files: the trainer writes them, the app and ensembles read them.

One compressed `.npz` per split holds every head's logits as float16 (about 2 bytes per class
and sample per member), the labels and the sample ids, so metrics, dashboards and ensembles
across trials never re-run a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from torch import Tensor

from mixmo_search import files

_KEYS = ("member_logits", "labels", "sample_ids", "split")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True, eq=False)
class Predictions:
    """Every head's logits on one split; `sample_ids` index into that split."""

    member_logits: np.ndarray  # (M, N, K) float16
    labels: np.ndarray  # (N,) smallest integer dtype that fits
    sample_ids: np.ndarray  # (N,)
    split: str

    @property
    def n_members(self) -> int:
        return self.member_logits.shape[0]

    @cached_property
    def ensemble_logits(self) -> np.ndarray:
        """(N, K) float32 mean of the members' logits, as `metrics.ensemble_logits`."""
        return self.member_logits.astype(np.float32).mean(axis=0)

    @cached_property
    def ensemble_probs(self) -> np.ndarray:
        """(N, K) float32 softmax of `ensemble_logits`."""
        shifted = self.ensemble_logits - self.ensemble_logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)


def _smallest_int(values: np.ndarray) -> np.ndarray:
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    return values.astype(np.result_type(np.min_scalar_type(low), np.min_scalar_type(high)))


def save_predictions(
    path: str | Path,
    member_logits: Tensor,
    labels: Tensor,
    *,
    split: str,
    sample_ids: Tensor | None = None,
) -> Path:
    """Write (M, N, K) logits and (N,) labels of `split` to the `.npz` file `path`, atomically.

    `sample_ids` are indices into the split (default 0..N-1). The file is written next to
    `path` under a temporary name and renamed into place, so a crash never leaves half a file.
    """
    if member_logits.dim() != 3:
        raise ValueError(
            f"member_logits must be (M, N, K), got shape {tuple(member_logits.shape)}"
        )
    n_samples = member_logits.shape[1]
    ids = np.arange(n_samples) if sample_ids is None else sample_ids.detach().cpu().numpy()
    for name, shape in (("labels", tuple(labels.shape)), ("sample_ids", ids.shape)):
        if shape != (n_samples,):
            raise ValueError(
                f"{name} must have shape ({n_samples},) like member_logits, got {shape}"
            )
    # Clamp so a huge logit saturates at the float16 maximum instead of becoming inf.
    logits = member_logits.detach().float().clamp(-_FLOAT16_MAX, _FLOAT16_MAX).cpu().numpy()
    arrays = {
        "member_logits": logits.astype(np.float16),
        "labels": _smallest_int(labels.detach().cpu().numpy()),
        "sample_ids": _smallest_int(ids),
        "split": np.array(split),
    }
    path = Path(path)
    with files.replacing(path) as tmp, tmp.open("wb") as out:
        np.savez_compressed(out, **arrays)
    return path


def load_predictions(path: str | Path) -> Predictions:
    """Read a file written by `save_predictions`."""
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in _KEYS if key not in archive.files]
        if missing:
            raise ValueError(
                f"{path}: not a predictions file, missing {', '.join(missing)}; "
                "write it with mixmo_search.predictions.save_predictions"
            )
        return Predictions(
            member_logits=archive["member_logits"],
            labels=archive["labels"],
            sample_ids=archive["sample_ids"],
            split=str(archive["split"]),
        )


def combine(preds: list[Predictions]) -> Predictions:
    """Stack the members of several runs evaluated on the same samples into one Predictions.

    Beyond the paper: its "x3" rows ensemble independently trained networks; this builds such
    ensembles across search trials, e.g. `evaluate(torch.from_numpy(combined.member_logits),
    torch.from_numpy(combined.labels), prefix="test")`. Splits, sample ids, labels and class
    counts must match, in the same sample order.
    """
    if not preds:
        raise ValueError("combine() needs at least one Predictions, got an empty list")
    first = preds[0]
    for index, other in enumerate(preds[1:], start=1):
        if other.split != first.split:
            raise ValueError(
                f"split mismatch: preds[0] is {first.split!r}, preds[{index}] is {other.split!r}"
            )
        if not np.array_equal(other.sample_ids, first.sample_ids):
            raise ValueError(
                f"sample_ids mismatch between preds[0] and preds[{index}]; "
                "evaluate both runs on the same samples in the same order"
            )
        if not np.array_equal(other.labels, first.labels):
            raise ValueError(f"labels mismatch between preds[0] and preds[{index}]")
        if other.member_logits.shape[2] != first.member_logits.shape[2]:
            raise ValueError(
                f"class count mismatch: preds[0] has {first.member_logits.shape[2]} classes, "
                f"preds[{index}] has {other.member_logits.shape[2]}"
            )
    return Predictions(
        member_logits=np.concatenate([p.member_logits for p in preds], axis=0),
        labels=first.labels,
        sample_ids=first.sample_ids,
        split=first.split,
    )
