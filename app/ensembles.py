"""The frames of the Ensembles and Accuracy-vs-cost pages: trials combined from the
predictions finished trials store (nothing re-runs a network), and their inference cost.

Deep ensembles of vanilla (M = 1) trials are the paper's baseline: MixMo claims their
accuracy at the inference cost of one network. Ensembles of MixMo trials go beyond the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from mixmo_search import tracking

if TYPE_CHECKING:
    from mixmo_search.predictions import Predictions


@st.cache_resource(show_spinner=False, max_entries=1024)
def predictions(uri: str, run_id: str, split: str) -> Predictions:
    """A finished trial's stored predictions (immutable, so cached without expiry)."""
    return tracking.download_predictions(tracking.connect(uri, create=False), run_id, split)


# what greedy selection may optimise (mixmo_search.ensembles.GREEDY_METRICS, named here so
# the page draws without importing torch)
GREEDY_METRICS = ("nll", "acc")


@st.cache_data(show_spinner=False, max_entries=64)
def combined(uri: str, run_ids: tuple[str, ...]) -> dict[str, float]:
    """Validation and test metrics of the ensemble of the trials `run_ids` (beyond the paper),
    from their stored predictions: the one thing of a trial the trainer did not log. A trial
    alone is shown with its logged metrics (the trial record), never recomputed here."""
    from mixmo_search.ensembles import evaluate_ensemble

    val = [predictions(uri, run_id, "val") for run_id in run_ids]
    test = [predictions(uri, run_id, "test") for run_id in run_ids]
    return evaluate_ensemble(val, test)


@dataclass(frozen=True)
class Greedy:
    """A greedy ensemble as it grew: one row per addition (`size`, the added `run_id`, the
    ensemble's validation and test metrics), and why selection stopped."""

    path: pd.DataFrame
    reason: str
    improving: bool  # False when it stopped because no addition improved validation


@st.cache_data(show_spinner=False, max_entries=64)
def greedy(
    uri: str, run_ids: tuple[str, ...], labels: tuple[str, ...], max_size: int, metric: str
) -> Greedy:
    """Greedy forward selection with replacement (Caruana et al. 2004) of an ensemble of the
    trials `run_ids` (named by `labels`) on validation `metric` (beyond the paper)."""
    from mixmo_search.ensembles import evaluate_ensemble, greedy_selection

    val = [predictions(uri, run_id, "val") for run_id in run_ids]
    path = greedy_selection(val, max_size=max_size, metric=metric)
    rows = []
    for size in range(1, len(path.order) + 1):
        chosen = path.order[:size]
        test = [predictions(uri, run_ids[i], "test") for i in chosen]
        scores = evaluate_ensemble([val[i] for i in chosen], test)
        rows.append({"size": size, "run_id": run_ids[chosen[-1]], **scores})
    return Greedy(pd.DataFrame(rows), path.stop_reason(labels), path.rejected is None)


def delta(value: float, reference: float, mode: str, *, digits: int = 4) -> dict[str, Any]:
    """`st.metric` arguments for the change from `reference` to `value`, as shown with
    `digits` decimals: green when better for a metric of `mode` ("max" or "min"), red when
    worse, grey with no arrow when the shown change is zero."""
    shown = round(value - reference, digits)
    if shown == 0:
        return {"delta": f"±{0:.{digits}f}", "delta_color": "off", "delta_arrow": "off"}
    better = shown > 0 if mode == "max" else shown < 0
    return {"delta": f"{shown:+.{digits}f}", "delta_color": "green" if better else "red"}


COSTS = {
    "cost/flops": "forward FLOPs per image",
    "cost/params": "parameters",
    "cost/images_per_s": "images/s at inference",
}
ENSEMBLE_SIZES = (2, 3, 4)  # the deep-ensemble baseline's k, as in the paper's tables


def costed(trials: pd.DataFrame) -> pd.DataFrame:
    """The finished trials that logged their inference cost (`cost/*`, measured at the end)."""
    if trials.empty or not set(COSTS) <= set(trials.columns):
        return trials.iloc[:0]
    finished = trials[trials["status"] == "finished"]
    return finished[finished[list(COSTS)].notna().all(axis=1)]


def vanilla_ranking(trials: pd.DataFrame, metric: str, mode: str) -> list[str]:
    """Run ids of the costed vanilla (M = 1) trials, best first on the validation `metric`:
    the deep-ensemble baseline of size k takes the first k."""
    pool = costed(trials)
    if "param.model.n_members" not in pool or metric not in pool:
        return []
    vanilla = pool[(pool["param.model.n_members"] == 1) & pool[metric].notna()]
    ranked = vanilla.sort_values([metric, "trial_id"], ascending=[mode == "min", True])
    return ranked["run_id"].tolist()


def costs_of(trials: pd.DataFrame, run_ids: list[str]) -> tuple[tuple[float, ...], ...]:
    """The `cost/*` of the trials `run_ids`, in the order of COSTS (`deep_ensembles`' input)."""
    by_run = trials.set_index("run_id")
    return tuple(tuple(float(by_run.at[r, c]) for c in COSTS) for r in run_ids)


@st.cache_data(show_spinner="Ensembling the vanilla trials' stored predictions...")
def deep_ensembles(
    uri: str,
    ranked: tuple[str, ...],
    labels: tuple[str, ...],
    costs: tuple[tuple[float, float, float], ...],
    sizes: tuple[int, ...] = ENSEMBLE_SIZES,
) -> pd.DataFrame:
    """For each k in `sizes` (at most len(ranked)): the ensemble of the first k `ranked` trials
    (named `labels`, with `costs` in the order of COSTS), its validation and test metrics and
    its summed inference cost (`mixmo_search.ensembles.ensemble_cost`)."""
    if len(ranked) < min(sizes):  # no baseline: spare the torch import of the evaluation
        return pd.DataFrame(columns=["k", "members", *COSTS])
    from mixmo_search.ensembles import ensemble_cost, evaluate_ensemble

    rows = []
    for k in (k for k in sizes if k <= len(ranked)):
        val = [predictions(uri, run_id, "val") for run_id in ranked[:k]]
        test = [predictions(uri, run_id, "test") for run_id in ranked[:k]]
        member_costs = [dict(zip(COSTS, c, strict=True)) for c in costs[:k]]
        rows.append(
            {
                "k": k,
                "members": ", ".join(labels[:k]),
                **evaluate_ensemble(val, test),
                **ensemble_cost(member_costs),
            }
        )
    return pd.DataFrame(rows)
