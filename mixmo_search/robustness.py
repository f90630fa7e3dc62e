"""A split under distribution shift (docs/method.md §Uncertainty): the network on corrupted
copies of the split and on out-of-distribution images, summarised as metrics and written as
stored predictions.

`prepare` runs once, after the data loads, and checks what a config asks for (so a missing
file fails before training); `evaluate` scores one split, `save` writes its artifacts beside the
clean predictions:

- `predictions/<split>_corruptions.json`: accuracy, NLL and ECE per corruption and severity
  (and the clean accuracy of the same images), the rows the dashboard's Robustness page draws;
- `predictions/<split>_corrupted.npz`: the ensemble's logits on every corrupted image, as one
  member over corruption x severity x image (deep ensembles across trials average these);
- `predictions/<split>_ood.npz`: every head's logits on the split's OOD images (label -1).

Validation is always scored on generated corruptions of its own images and its own OOD set,
so what selects a trial never overlaps what the test split reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from mixmo_search import files
from mixmo_search.config import TrainConfig, corruption_families
from mixmo_search.corruption_files import corrupted_test, corruption_folder
from mixmo_search.corruptions import SEVERITIES, applicable, corrupt
from mixmo_search.data import Normalizer
from mixmo_search.datasets import Dataset, Split
from mixmo_search.errors import ConfigError
from mixmo_search.inference import member_logits
from mixmo_search.metrics import ece, ensemble_logits, nll, topk_accuracy
from mixmo_search.models import MixMoNet
from mixmo_search.ood import load_ood
from mixmo_search.predictions import save_predictions
from mixmo_search.uncertainty import ood_metrics

SPLIT_SEEDS = {"val": 0, "test": 1}  # noise and subsets: the same in every trial and epoch
OOD_LABEL = -1  # the label stored with OOD images: no class of the data set


@dataclass(frozen=True)
class Shifts:
    """What a trial scores besides its clean splits, prepared once."""

    families: tuple[str, ...]  # generated corruptions (empty: none)
    subsets: dict[str, Tensor]  # split -> sorted indices of the images corrupted
    test_files: Path | None  # a published corrupted test set, else generated ones
    test_source: str  # "generated", or the published set's name
    ood: dict[str, Tensor]  # split -> OOD images (uint8, on the device); empty: none


@dataclass(frozen=True)
class Evaluated:
    """One split under shift: its metrics (`split/corrupt_*`, `split/ood_*`) and what `save`
    writes."""

    split: str
    metrics: dict[str, float]
    rows: list[dict[str, float | str | int]]  # per corruption and severity
    clean_acc: float  # of the corrupted images, before the corruption
    source: str
    corrupted_logits: Tensor | None  # (V, n, K) ensemble logits, V = corruption x severity
    corrupted_labels: Tensor | None
    subset: Tensor | None
    ood_logits: Tensor | None  # (M, N_ood, K)


def prepare(cfg: TrainConfig, ds: Dataset, device: torch.device) -> Shifts | None:
    """The shifts `cfg.data` asks for, on `ds` (already on `device`); None when it asks for
    none. Raises ConfigError for a family the images cannot take, DataError for missing
    files."""
    data = cfg.data
    asked = corruption_families(data.corruptions)
    families = applicable(asked, ds.in_channels, ds.image_size)
    refused = [f for f in asked if f not in families]
    if refused and data.corruptions.strip() != "all":
        raise ConfigError(
            f"`data.corruptions` names {', '.join(refused)}, which {ds.name}'s "
            f"{ds.in_channels}-channel {ds.image_size} px images cannot take (saturate needs "
            "colour, pixelate 32 px or more); drop it from data.corruptions"
        )
    if not families and not data.ood:
        return None
    subsets = {
        split: _subset(len(getattr(ds, split)), data.corruption_size, SPLIT_SEEDS[split])
        for split in ("val", "test")
    }
    test_files = None
    if families and data.corruptions_test != "generated":
        test_files = corruption_folder(data.corruptions_test, data.root, download=data.download)
    ood = {}
    if data.ood:
        sets = load_ood(data, ds)
        ood = {"val": sets.val.to(device), "test": sets.test.to(device)}
    return Shifts(families, subsets, test_files, data.corruptions_test, ood)


def _subset(size: int, limit: int, seed: int) -> Tensor:
    if limit == 0 or limit >= size:
        return torch.arange(size)
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:limit].sort()[0]


def evaluate(
    model: MixMoNet,
    normalize: Normalizer,
    shifts: Shifts,
    split_name: str,
    split: Split,
    clean_logits: Tensor,
    *,
    batch_size: int,
    precision: str,
) -> Evaluated:
    """`split` (its clean (M, N, K) logits given) under the corruptions and OOD images of
    `shifts`: `corrupt_acc`, `corrupt_nll`, `corrupt_ece` (means over corruptions and
    severities), `corrupt_rel_acc` (over the clean accuracy of the same images) and
    `ood_<metric>_<score>`, keyed `split_name/...`."""
    logits_of = partial(
        member_logits, model, normalize=normalize, batch_size=batch_size, precision=precision
    )
    metrics: dict[str, float] = {}
    rows, clean_acc, source = [], float("nan"), "none"
    corrupted = labels = subset = None
    if shifts.families and len(split):
        subset = shifts.subsets[split_name].to(split.labels.device)
        labels = split.labels[subset]
        clean_acc = topk_accuracy(ensemble_logits(clean_logits[:, subset]), labels, 1)
        source = shifts.test_source if split_name == "test" else "generated"
        outputs = []
        for family, severity, images in _variants(shifts, split_name, split, subset):
            logits = ensemble_logits(logits_of(images.to(split.images.device)))  # (n, K)
            outputs.append(logits.float())
            rows.append({"corruption": family, "severity": severity,
                         **_variant_metrics(logits, labels)})  # fmt: skip
        corrupted = torch.stack(outputs)  # (V, n, K)
        metrics |= _means(rows, clean_acc)
    ood_logits = None
    if shifts.ood and len(split):
        ood_logits = logits_of(shifts.ood[split_name])
        metrics |= ood_metrics(clean_logits, ood_logits)
    return Evaluated(
        split_name, {f"{split_name}/{k}": v for k, v in metrics.items()}, rows, clean_acc,
        source, corrupted, labels, subset, ood_logits,
    )  # fmt: skip


def _variants(
    shifts: Shifts, split_name: str, split: Split, subset: Tensor
) -> Iterator[tuple[str, int, Tensor]]:
    """(corruption, severity, uint8 images) of the split's corrupted images."""
    if split_name == "test" and shifts.test_files is not None:
        yield from corrupted_test(shifts.test_files, subset, split.labels)
        return
    clean = split.images[subset]
    for family in shifts.families:
        for severity in SEVERITIES:
            yield family, severity, corrupt(clean, family, severity, seed=SPLIT_SEEDS[split_name])


def _variant_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    return {
        "acc": topk_accuracy(logits, labels, 1),
        "nll": nll(logits, labels),
        "ece": ece(logits.softmax(dim=1), labels),
    }


def _means(rows: list[dict], clean_acc: float) -> dict[str, float]:
    mean = {m: sum(r[m] for r in rows) / len(rows) for m in ("acc", "nll", "ece")}
    return {
        "corrupt_acc": mean["acc"],
        "corrupt_nll": mean["nll"],
        "corrupt_ece": mean["ece"],
        "corrupt_rel_acc": mean["acc"] / clean_acc if clean_acc > 0 else float("nan"),
    }


def save(evaluated: Evaluated, folder: Path) -> None:
    """Write `evaluated`'s artifacts into `folder` (the trial's predictions/)."""
    split = evaluated.split
    if evaluated.corrupted_logits is not None:
        variants, n, _ = evaluated.corrupted_logits.shape
        save_predictions(
            folder / f"{split}_corrupted.npz",
            evaluated.corrupted_logits.reshape(1, variants * n, -1),
            evaluated.corrupted_labels.repeat(variants),
            split=f"{split}_corrupted",
            sample_ids=evaluated.subset.repeat(variants),
        )
        table = {"split": split, "source": evaluated.source, "images": n,
                 "clean_acc": evaluated.clean_acc, "rows": evaluated.rows}  # fmt: skip
        files.write_text(folder / f"{split}_corruptions.json", json.dumps(table, indent=1))
    if evaluated.ood_logits is not None:
        n_ood = evaluated.ood_logits.shape[1]
        save_predictions(
            folder / f"{split}_ood.npz",
            evaluated.ood_logits,
            torch.full((n_ood,), OOD_LABEL),
            split=f"{split}_ood",
        )
