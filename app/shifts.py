"""The frames of the Robustness and OOD pages (docs/method.md §Uncertainty): what finished
trials stored under distribution shift, per trial and for deep ensembles of vanilla trials.

Everything comes from the artifacts the trainer writes (`predictions/<split>_corruptions.json`,
`<split>_corrupted.npz`, `<split>_ood.npz`); nothing re-runs a network. Deep ensembles average
their members' stored logits as the Accuracy-vs-cost page does (app/ensembles.py).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from app import ensembles
from mixmo_search import tracking

SCORES = {
    "msp": "max-softmax",
    "entropy": "predictive entropy",
    "mi": "mutual information of the members",
    "disagreement": "member disagreement",
}


def robust(trials: pd.DataFrame, split: str = "val") -> pd.DataFrame:
    """The finished trials that logged corrupted accuracy on `split`."""
    column = f"{split}/corrupt_acc"
    if trials.empty or column not in trials:
        return trials.iloc[:0]
    return trials[(trials["status"] == "finished") & trials[column].notna()]


def with_ood(trials: pd.DataFrame, split: str = "val") -> pd.DataFrame:
    """The finished trials that logged OOD detection metrics on `split`."""
    column = f"{split}/ood_auroc_msp"
    if trials.empty or column not in trials:
        return trials.iloc[:0]
    return trials[(trials["status"] == "finished") & trials[column].notna()]


@st.cache_data(show_spinner=False, max_entries=256)
def corruption_table(uri: str, run_id: str, split: str) -> dict:
    """A finished trial's `predictions/<split>_corruptions.json` (immutable once written)."""
    client = tracking.connect(uri, create=False)
    with tempfile.TemporaryDirectory(prefix="mixmo-corruptions-") as folder:
        path = tracking.download_artifact(
            client, run_id, f"predictions/{split}_corruptions.json", folder
        )
        return json.loads(Path(path).read_text())


def severity_rows(uri: str, run_ids: list[str], labels: list[str], split: str) -> pd.DataFrame:
    """Long frame (trial, corruption, severity, acc, nll, ece), severity 0 being the clean
    accuracy of the same images, for the trials `run_ids` named `labels`."""
    rows = []
    for run_id, label in zip(run_ids, labels, strict=True):
        table = corruption_table(uri, run_id, split)
        for corruption in dict.fromkeys(r["corruption"] for r in table["rows"]):
            rows.append({"trial": label, "corruption": corruption, "severity": 0,
                         "acc": table["clean_acc"]})  # fmt: skip
        rows += [{"trial": label, **row} for row in table["rows"]]
    return pd.DataFrame(rows, columns=["trial", "corruption", "severity", "acc", "nll", "ece"])


@st.cache_data(show_spinner="Ensembling the vanilla trials' stored corrupted predictions...")
def deep_ensembles_corrupted(
    uri: str,
    ranked: tuple[str, ...],
    labels: tuple[str, ...],
    costs: tuple[tuple[float, float, float], ...],
    sizes: tuple[int, ...] = ensembles.ENSEMBLE_SIZES,
) -> pd.DataFrame:
    """For each k in `sizes` (at most len(ranked)): the mean corrupted accuracy on val and test
    of the ensemble of the first k `ranked` vanilla trials, and its summed inference cost."""
    if len(ranked) < min(sizes):
        return pd.DataFrame(columns=["k", "members", *ensembles.COSTS])
    from mixmo_search.ensembles import ensemble_cost

    rows = []
    for k in (k for k in sizes if k <= len(ranked)):
        row = {"k": k, "members": ", ".join(labels[:k])}
        for split in ("val", "test"):
            row[f"{split}/corrupt_acc"] = _ensemble_corrupt_acc(uri, ranked[:k], split)
        member_costs = [dict(zip(ensembles.COSTS, c, strict=True)) for c in costs[:k]]
        rows.append({**row, **ensemble_cost(member_costs)})
    return pd.DataFrame(rows)


def _ensemble_corrupt_acc(uri: str, run_ids: tuple[str, ...], split: str) -> float:
    """Mean over corruptions and severities of the accuracy of the averaged stored logits."""
    import numpy as np

    stored = [ensembles.predictions(uri, r, f"{split}_corrupted") for r in run_ids]
    variants = len(corruption_table(uri, run_ids[0], split)["rows"])
    logits = np.mean([p.member_logits[0].astype(np.float32) for p in stored], axis=0)
    hits = logits.argmax(axis=1) == stored[0].labels
    return float(hits.reshape(variants, -1).mean())


@st.cache_data(show_spinner="Scoring the stored OOD predictions...")
def roc_curves(
    uri: str, run_ids: tuple[str, ...], labels: tuple[str, ...], split: str, score: str
) -> pd.DataFrame:
    """Long frame (trial, fpr, tpr) of each trial's ROC curve for `score` on `split` (the
    in-distribution images are the positives), from its stored predictions."""
    import numpy as np
    from sklearn.metrics import roc_curve

    frames = []
    for run_id, label in zip(run_ids, labels, strict=True):
        inside, outside = _scores(uri, (run_id,), split, score)
        is_in = np.r_[np.ones(len(inside)), np.zeros(len(outside))]
        fpr, tpr, _ = roc_curve(is_in, np.r_[inside, outside])
        frames.append(pd.DataFrame({"trial": label, "fpr": fpr, "tpr": tpr}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@st.cache_data(show_spinner="Ensembling the vanilla trials' stored OOD predictions...")
def deep_ensembles_ood(
    uri: str,
    ranked: tuple[str, ...],
    labels: tuple[str, ...],
    costs: tuple[tuple[float, float, float], ...],
    score: str,
    sizes: tuple[int, ...] = ensembles.ENSEMBLE_SIZES,
) -> pd.DataFrame:
    """For each k: the ensemble of the first k `ranked` vanilla trials as one k-member
    network (the members' mean logits, their disagreement), its val and test OOD metrics for
    `score` and its summed inference cost."""
    if len(ranked) < min(sizes):
        return pd.DataFrame(columns=["k", "members", *ensembles.COSTS])
    from mixmo_search.ensembles import ensemble_cost
    from mixmo_search.uncertainty import detection_metrics

    rows = []
    for k in (k for k in sizes if k <= len(ranked)):
        row = {"k": k, "members": ", ".join(labels[:k])}
        for split in ("val", "test"):
            inside, outside = _scores(uri, ranked[:k], split, score)
            found = detection_metrics(*_tensors(inside, outside))
            row |= {f"{split}/ood_{m}_{score}": v for m, v in found.items()}
        member_costs = [dict(zip(ensembles.COSTS, c, strict=True)) for c in costs[:k]]
        rows.append({**row, **ensemble_cost(member_costs)})
    return pd.DataFrame(rows)


def _scores(uri: str, run_ids: tuple[str, ...], split: str, score: str):
    """(in-distribution, OOD) numpy scores of the trials `run_ids` taken as one ensemble whose
    members are all their heads."""
    import numpy as np
    import torch

    from mixmo_search.uncertainty import ood_scores

    def heads(name: str):
        stored = [ensembles.predictions(uri, r, name) for r in run_ids]
        return torch.from_numpy(
            np.concatenate([p.member_logits for p in stored]).astype(np.float32)
        )

    return (
        ood_scores(heads(split))[score].numpy(),
        ood_scores(heads(f"{split}_ood"))[score].numpy(),
    )


def _tensors(*arrays):
    import torch

    return tuple(torch.from_numpy(a) for a in arrays)
