"""The searched parameters: on which axis each is drawn, and how much each matters.

`param_scales` follows the search's space file (categorical and fixed params on an axis of
their values, loguniform ones on a log axis) and falls back on the values. Importances are
Optuna's, on the search's own Optuna study (its trials' params and distributions, as the
sampler drew them) where the dashboard can open it, else on the trial record; PED-ANOVA by
default (fast at any size), the forest evaluators on a seeded sample of at most
MAX_FOREST_TRIALS trials; refused with the reason on too few trials.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app.queries import categories
from mixmo_search import tracking

MIN_IMPORTANCE_TRIALS = 5  # fewer trials than this and a forest's importances are noise
MAX_CATEGORIES = 12  # an int param with at most this many values gets a categorical axis
LOG_SPAN = 100.0  # positive values spanning this factor (2 decades) get a log axis
EVALUATORS = {
    "PED-ANOVA": "PedAnovaImportanceEvaluator",  # Optuna's fast one: quantiles, no forest
    "fANOVA": "FanovaImportanceEvaluator",
    "mean decrease impurity": "MeanDecreaseImpurityImportanceEvaluator",
}
MAX_FOREST_TRIALS = 500  # the forest evaluators fit a seeded sample of at most this many


@st.cache_data(show_spinner=False, max_entries=64)
def space_params(uri: str, search_id: str) -> dict[str, dict[str, Any]]:
    """The `params` section of the search's space file ({} when the search stored none)."""
    space = tracking.search_space(tracking.connect(uri, create=False), search_id) or {}
    params = space.get("params") if isinstance(space, dict) else None
    return {str(k): v for k, v in params.items() if isinstance(v, dict)} if params else {}


def param_scales(
    trials: pd.DataFrame, params: Sequence[str], declared: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """How to draw each `param.*` column on an axis: "categorical", "log" or "linear".

    Categorical: the space's categorical and fixed params, non-numbers, and ints with at most
    MAX_CATEGORIES values. Log: the space's loguniform (or `log: true` int) params, and
    positive numbers spanning LOG_SPAN or more. `declared` is `space_params`' mapping.
    """
    scales = {}
    for column in params:
        spec = declared.get(column.removeprefix("param."), {})
        kind, values = spec.get("type"), trials[column].dropna()
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        if kind in ("categorical", "fixed") or not numeric:
            scales[column] = "categorical"
        elif kind == "loguniform" or spec.get("log") is True or _spans_decades(values):
            scales[column] = "log"
        elif (kind == "int" or pd.api.types.is_integer_dtype(values)) and (
            values.nunique() <= MAX_CATEGORIES
        ):
            scales[column] = "categorical"
        else:
            scales[column] = "linear"
    return scales


def axis_categories(
    trials: pd.DataFrame, scales: Mapping[str, str], declared: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """The values on each categorical axis, the same on every page and subset of trials: the
    space's choices (or int range) in its order, else every value the search's trials took."""
    axes = {}
    for column, scale in scales.items():
        if scale != "categorical":
            continue
        spec = declared.get(column.removeprefix("param."), {})
        if spec.get("type") == "categorical" and isinstance(spec.get("choices"), list):
            axes[column] = list(spec["choices"])
        elif spec.get("type") == "int" and {"low", "high"} <= spec.keys():
            axes[column] = list(range(int(spec["low"]), int(spec["high"]) + 1,
                                      int(spec.get("step", 1))))  # fmt: skip
        else:
            axes[column] = categories(trials[column])
    return axes


def _spans_decades(values: pd.Series) -> bool:
    return len(values) > 0 and values.min() > 0 and values.max() / values.min() >= LOG_SPAN


def importance_refusal(
    trials: pd.DataFrame, params: Sequence[str], target: str, *, include_pruned: bool = False
) -> str | None:
    """Why parameter importance for `target` would mislead here, or None when it can be
    computed: fewer than MIN_IMPORTANCE_TRIALS trials, or no parameter that varies."""
    pool = importance_pool(trials, target, include_pruned=include_pruned)
    finished = int((pool["status"] == "finished").sum())
    which = "finished or stopped-early" if include_pruned else "finished"
    if len(pool) < MIN_IMPORTANCE_TRIALS:
        text = (
            f"Importance needs at least {MIN_IMPORTANCE_TRIALS} {which} trials with {target}; "
            f"this search has {len(pool)} ({finished} finished). With fewer, the forest that "
            "scores the parameters fits noise and ranks them by chance."
        )
        if not include_pruned and (trials["status"] == "pruned").any():
            text += (
                " Include the trials stopped early to score their last epoch's values, or wait "
                "for more trials to finish."
            )
        return text
    if not any(pool[p].nunique(dropna=True) > 1 for p in params):
        return f"No searched parameter varies among the {len(pool)} {which} trials."
    return None


def importance_pool(trials: pd.DataFrame, target: str, *, include_pruned: bool) -> pd.DataFrame:
    """The trials importance is computed over: finished ones with `target`, and the trials
    stopped early (their last epoch's value) when `include_pruned`."""
    statuses = ["finished", "pruned"] if include_pruned else ["finished"]
    if target not in trials:
        return trials.iloc[:0]
    return trials[trials["status"].isin(statuses) & trials[target].notna()]


@dataclass(frozen=True)
class Importance:
    """Importances (`param`, `importance`, summing to 1) and where they come from."""

    scores: pd.DataFrame
    source: str  # "the search's Optuna study" or "the trial record"
    trials: int  # how many trials the evaluator saw
    left_out: tuple[str, ...] = ()  # conditional params, not drawn in every trial


@st.cache_resource(show_spinner=False, max_entries=16)
def search_study(storage: str, name: str) -> tuple[Any, int] | None:
    """(storage, study id) of the search's own Optuna study: named by the search, in the
    database its storage folder's search.json names (else that folder's optuna.db); None when
    this machine cannot open it (the folder is elsewhere, or the study is not there). Read
    through Optuna's storage API, not a Study: a Study's cache reads every trial of the
    study first (3 s at 5,000 trials), the storage only the states asked for."""
    import optuna

    folder = Path(storage) if storage else None
    if folder is None or not folder.is_dir():
        return None
    try:
        url = json.loads((folder / "search.json").read_text()).get("optuna_storage")
    except (OSError, ValueError, AttributeError):
        url = None
    if url is None and (folder / "optuna.db").is_file():
        url = f"sqlite:///{folder / 'optuna.db'}"
    if url is None:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        db = optuna.storages.RDBStorage(
            url, skip_compatibility_check=True, skip_table_creation=True
        )
        return db, db.get_study_id_from_name(name)
    except Exception:  # noqa: BLE001 - a study this machine cannot read: use the record
        return None


@st.cache_data(show_spinner="Computing parameter importances...", max_entries=32)
def param_importances(
    trials: pd.DataFrame,
    params: Sequence[str],
    target: str,
    mode: str,
    *,
    evaluator: str = "PED-ANOVA",
    include_pruned: bool = False,
    scales: Mapping[str, str] | None = None,
    study: tuple[str, str] | None = None,
) -> Importance:
    """Optuna's importance of each varying parameter for `target` over finished trials (and
    the trials stopped early, at their last epoch, when `include_pruned`).

    `study` is the search's (storage folder, name): its trials, with the params and
    distributions the sampler drew, are scored on `target` from `trials` (the record) by
    their Optuna number. Without a readable study the record's values are used, with
    distributions from `scales` (`param_scales`). Conditional params (not drawn in every
    scored trial) are left out, as Optuna's evaluators do. Empty when `importance_refusal`
    refuses.
    """
    import optuna

    empty = pd.DataFrame({"param": [], "importance": []})
    if importance_refusal(trials, params, target, include_pruned=include_pruned):
        return Importance(empty, "", 0)
    pool = importance_pool(trials, target, include_pruned=include_pruned)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    own = search_study(*study) if study else None
    if own is not None:
        scored = _study_trials(own, pool, target, include_pruned=include_pruned)
        source = "the search's Optuna study"
    else:
        scored, source = _record_trials(pool, params, target, scales), "the trial record"
    if len(scored) < MIN_IMPORTANCE_TRIALS:
        return Importance(empty, source, len(scored))
    if evaluator != "PED-ANOVA" and len(scored) > MAX_FOREST_TRIALS:
        scored = pd.Series(scored).sample(MAX_FOREST_TRIALS, random_state=0).tolist()
    replay = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    replay.add_trials(scored)
    drawn = {name for t in scored for name in t.params}
    every = set.intersection(*(set(t.params) for t in scored))
    varying = [p for p in sorted(every) if len({t.params[p] for t in scored}) > 1]
    if not varying:
        return Importance(empty, source, len(scored), tuple(sorted(drawn - every)))
    with warnings.catch_warnings():  # PED-ANOVA is "experimental", and warns on small studies
        warnings.simplefilter("ignore")
        scorer = getattr(optuna.importance, EVALUATORS[evaluator])(
            **({} if evaluator == "PED-ANOVA" else {"seed": 0})
        )
        scores = optuna.importance.get_param_importances(
            replay, evaluator=scorer, params=varying, normalize=True
        )
    frame = pd.DataFrame({"param": [f"param.{k}" for k in scores],
                          "importance": list(scores.values())})  # fmt: skip
    return Importance(frame, source, len(scored), tuple(sorted(drawn - every)))


def _study_trials(
    study: tuple[Any, int], pool: pd.DataFrame, target: str, *, include_pruned: bool
) -> list[Any]:
    """The study's trials of the `pool` rows (by Optuna number), as COMPLETE trials valued at
    their `target`, with the params and distributions the sampler drew."""
    import optuna
    from optuna.trial import TrialState

    storage, study_id = study
    values = dict(zip(pool["optuna_trial"], pool[target], strict=True))
    states = (TrialState.COMPLETE, TrialState.PRUNED) if include_pruned else (TrialState.COMPLETE,)
    return [
        optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, value=float(values[t.number])
        )
        for t in storage.get_all_trials(study_id, deepcopy=False, states=states)
        if t.number in values and t.params
    ]


def _record_trials(
    pool: pd.DataFrame, params: Sequence[str], target: str, scales: Mapping[str, str] | None
) -> list[Any]:
    """The `pool` rows as COMPLETE trials valued at their `target`: the params each drew
    (missing ones are not drawn), on distributions from `scales` and the observed values."""
    import optuna

    varying = [p for p in params if pool[p].nunique(dropna=True) > 1]
    distributions = {p: _distribution(pool[p].dropna(), (scales or {}).get(p)) for p in varying}
    trials = []
    for row in pool.to_dict("records"):
        values = {p.removeprefix("param."): _plain(row[p]) for p in varying if row[p] == row[p]}
        trials.append(
            optuna.trial.create_trial(
                params=values,
                distributions={k: distributions[f"param.{k}"] for k in values},
                value=float(row[target]),
            )
        )
    return trials


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value Optuna distributions accept."""
    return value.item() if hasattr(value, "item") else value


def _distribution(values: pd.Series, scale: str | None = None) -> Any:
    """The Optuna distribution of a parameter, from its axis scale and observed values."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if scale == "categorical" or not numeric:
        return CategoricalDistribution(categories(values))
    low, high = _plain(values.min()), _plain(values.max())
    log = scale == "log" or (scale is None and _spans_decades(values))
    if pd.api.types.is_integer_dtype(values):
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)
