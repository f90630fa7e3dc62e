"""The dashboard's data: cached loaders and the frames the pages show (compute, then render).

Loaders take plain values (URI, ids) so Streamlit can cache them and read the store through
`mixmo_search.tracking` only. A first render costs one `search_runs` call for the searches,
one read of the chosen search's trials (SQL on SQLite and PostgreSQL stores) and its space
file; metric histories and stored predictions load on demand, for the trials a page shows.
The other functions are pure, on the trials frame.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

from mixmo_search import tracking, trial_table
from mixmo_search.trial_table import BASE_COLUMNS, NOT_DRAWN, STATUSES, metric_columns

__all__ = ["BASE_COLUMNS", "NOT_DRAWN", "STATUSES", "metric_columns"]  # the record's, here too

SEARCHES_TTL_S = 30  # a new search shows up in the picker within this time
TRIALS_TTL_S = 120  # a running search clears this cache itself on every refresh
HISTORY_TTL_S = 60  # learning curves of running trials grow by one epoch at a time
# the trials table's first metrics, beside the objectives (the last two where trials log
# them): each validation figure with its test counterpart; the rest on demand
KEY_METRICS = ("val/acc", "test/acc", "val/nll", "test/nll", "val/ece", "val/disagreement",
               "val/corrupt_acc", "val/ood_auroc_msp")  # fmt: skip
# Metric names ending with one of these are better when larger; all others when smaller.
_MAXIMISED = ("acc", "top5", "disagreement", "ratio_error", "member_acc_mean", "slots_per_s",
              "images_per_s", "corrupt_acc", "corrupt_rel_acc", "cov_at_", "ood_auroc",
              "ood_aupr")  # fmt: skip
# how a number is shown, by what it counts: st.column_config formats (printf or a name)
COUNTS = ("epochs", "best_epoch", "optuna_trial", "size", "k", "trials/", "train/images")
LARGE = ("cost/params", "cost/flops")  # millions and billions: compact (36.5M, 10.5G)
RATES = ("images_per_s", "slots_per_s", "seconds")  # throughput and time: whole numbers


@st.cache_data(ttl=SEARCHES_TTL_S, show_spinner=False)
def searches(uri: str, experiment: str = tracking.EXPERIMENT) -> pd.DataFrame:
    """The experiment's searches, newest first, with `experiment_id`, `best_metric`, `best`."""
    client = tracking.connect(uri, create=False)
    exp_id = tracking.experiment_id(client, experiment, create=False)
    frame = tracking.list_searches(client, exp_id)
    if frame.empty:
        return frame
    frame["experiment_id"] = exp_id
    frame["best_metric"] = [next(iter(objectives(o)), "") for o in frame["objectives"]]
    frame["best"] = [
        row.get(f"final/{row['best_metric']}", math.nan) for row in frame.to_dict("records")
    ]
    return frame.sort_values("start_time", ascending=False, ignore_index=True)


def objectives(text: str) -> dict[str, str]:
    """{metric: mode} of a search's `mixmo.objectives` tag, in the search's order."""
    return {o["metric"]: o["mode"] for o in json.loads(text or "[]")}


def search_details(search: Mapping[str, Any], trials: pd.DataFrame) -> str:
    """The picked search in a sentence: status, trials by status, best trial, start time."""
    counts = trials["status"].value_counts() if not trials.empty else {}
    by_status = ", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts)
    text = f"{str(search['status']).lower()}, {len(trials)} trials" + (
        f" ({by_status})" if by_status else ""
    )
    if search.get("best_trial") and pd.notna(search["best"]):
        text += f"; best {search['best_trial']}: {search['best_metric']} {search['best']:.4f}"
    return f"{text}; started {search['start_time']:%Y-%m-%d %H:%M}"


def search_label(search: Mapping[str, Any]) -> str:
    """One line for the picker: name, status, trial count, best objective, start time."""
    parts = [str(search["search"]), str(search["status"]).lower()]
    total = search.get("trials/total", math.nan)
    if pd.notna(total):  # NaN until the search ends and logs its counts
        parts.append(f"{int(total)} trials")
    if pd.notna(search["best"]):
        parts.append(f"best {search['best_metric']} {search['best']:.4f}")
    parts.append(f"{search['start_time']:%Y-%m-%d %H:%M}")
    return " · ".join(parts)


@st.cache_data(ttl=TRIALS_TTL_S, show_spinner=False)
def trials(uri: str, exp_id: str, search_id: str) -> pd.DataFrame:
    """The search's trial record (`trial_table.trial_record`): one row per trial, the params
    it drew, its outcome and its reported metrics, as the summary and promotion read it."""
    client = tracking.connect(uri, create=False)
    return trial_table.trial_record(client, exp_id, search_id)


def number_format(name: str) -> str:
    """How to show the column `name` (a `st.column_config.NumberColumn` format): counts as
    integers, parameter and FLOP counts compact, rates and times whole, the rest (accuracies,
    losses, calibration, diversity) with 4 decimals."""
    if name.startswith(COUNTS) or name in COUNTS:
        return "%d"
    if name in LARGE:
        return "compact"
    if name.split("/")[-1].startswith(RATES):
        return "%.0f"
    return "%.4f"


def shown_number(name: str, value: Any) -> str:
    """`value` of the column `name` as `number_format` shows it ("—" when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_DRAWN
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    fmt = number_format(name)
    if fmt == "compact":
        return _compact(float(value))
    return fmt % (round(value) if fmt == "%d" else value)


def _compact(value: float) -> str:
    for size, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.3g}"


def column_formats(columns: Sequence[str]) -> dict[str, Any]:
    """`st.dataframe` column configs giving each numeric column its `number_format`."""
    return {c: st.column_config.NumberColumn(c, format=number_format(c)) for c in columns}


def formatted(frame: pd.DataFrame, *, by_row: bool = False) -> pd.DataFrame:
    """A copy of `frame` with every number as text in its `number_format` (by its column's
    name, or its row's when `by_row`): for tables whose columns mix metrics."""
    if by_row:
        return formatted(frame.T).T
    return frame.apply(lambda column: column.map(lambda v: shown_number(str(column.name), v)))


def epoch_metrics(trials: pd.DataFrame) -> list[str]:
    """Metrics logged every epoch: all but the final-only test and cost metrics and best epoch."""
    return [
        m
        for m in metric_columns(trials)
        if not m.startswith(("test/", "cost/")) and m != "best_epoch"
    ]


def metric_mode(name: str, search_objectives: Mapping[str, str]) -> str:
    """The search's mode ("max" or "min") for an objective, else one guessed from the name."""
    if name in search_objectives:
        return search_objectives[name]
    return "max" if name.split("/")[-1].startswith(_MAXIMISED) else "min"


def searched_params(trials: pd.DataFrame) -> list[str]:
    """The `param.*` columns the sampler chose, from each trial's `searched` param."""
    keys: set[str] = set()
    for value in trials.get("param.searched", pd.Series(dtype=object)).dropna():
        keys.update(ast.literal_eval(value) if isinstance(value, str) else [])
    return [f"param.{k}" for k in sorted(keys) if f"param.{k}" in trials.columns]


def front_run_ids(trials: pd.DataFrame, metrics: Sequence[str], modes: Sequence[str]) -> list[str]:
    """Run ids of the finished trials that no other finished trial dominates on `metrics`:
    `trial_table.pareto_run_ids`, the summary's and promotion's Pareto set."""
    return trial_table.pareto_run_ids(trials, dict(zip(metrics, modes, strict=True)))


def pareto_axes(search_objectives: Mapping[str, str]) -> dict[str, str]:
    """{metric: mode} the search's Pareto set is on (`trial_table.pareto_axes`)."""
    return trial_table.pareto_axes(search_objectives)


def filter_options(
    trials: pd.DataFrame, column: str, scale: str = "linear"
) -> list[Any] | tuple[float, float]:
    """What to offer as a filter: the (low, high) range of a float column, else the distinct
    values (categories, booleans, integers such as M, and floats drawn from a list), with
    NOT_DRAWN last when some trials did not draw the param."""
    values = trials[column].dropna()
    if scale != "categorical" and pd.api.types.is_float_dtype(values) and values.nunique() > 1:
        return float(values.min()), float(values.max())
    return categories(values) + ([NOT_DRAWN] if trials[column].isna().any() else [])


def categories(values: pd.Series) -> list[Any]:
    """The distinct values in axis order: numbers by value (1, 2, 4, inf), others by text."""
    return sorted(values.dropna().unique().tolist(), key=_category_order)


def _category_order(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, value
    return 1, str(value)


def filter_trials(
    trials: pd.DataFrame,
    *,
    statuses: Sequence[str],
    choices: Mapping[str, Sequence[Any]] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> pd.DataFrame:
    """The trials with one of `statuses`, a value in `choices[column]` (NOT_DRAWN there keeps
    the trials that did not draw the param) and within `ranges[column]` (inclusive; trials
    that did not draw the param stay) for every filtered column."""
    keep = trials["status"].isin(statuses)
    for column, allowed in (choices or {}).items():
        undrawn = trials[column].isna() & (NOT_DRAWN in list(allowed))
        keep &= trials[column].isin([a for a in allowed if a != NOT_DRAWN]) | undrawn
    for column, (low, high) in (ranges or {}).items():
        keep &= trials[column].between(low, high) | trials[column].isna()
    return trials[keep]


def run_url(ui_base: str, exp_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI served at `ui_base`."""
    return f"{ui_base.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}"


def by_objective(trials: pd.DataFrame, metric: str | None, mode: str) -> pd.DataFrame:
    """The trials sorted on `metric`, best first in its direction (`mode`), ties as Optuna
    breaks them (`trial_table.best_first`), missing values last; unchanged when there is no
    such column."""
    if metric is None:
        return trials
    return trial_table.best_first(trials, metric, mode)


def trials_table(
    trials: pd.DataFrame,
    *,
    params: Sequence[str],
    metrics: Sequence[str],
    exp_id: str,
    ui_base: str,
    pareto: Sequence[str] = (),
) -> pd.DataFrame:
    """The trials table, in the order of `trials`, most used columns first: Ray trial id, its
    MLflow link, Optuna trial number, status, `metrics` (objectives first: the caller's
    order), params (short names; missing where a trial did not draw one), epochs run, whether
    it is on the Pareto set (`pareto`: run ids), start time, and the failure reason when a
    trial failed."""
    columns = ["trial_id", "optuna_trial", "status", *metrics, *params, "epochs",
               "start_time"]  # fmt: skip
    if trials["error"].fillna("").astype(bool).any():
        columns.append("error")
    table = trials.reindex(columns=columns)
    table["optuna_trial"] = table["optuna_trial"].astype("Int64")  # "—" where unknown
    table["epochs"] = table["epochs"].astype("Int64")
    table.insert(columns.index("epochs") + 1, "pareto", trials["run_id"].isin(list(pareto)))
    table = table.rename(columns={p: p.removeprefix("param.") for p in params})
    table.insert(1, "mlflow", [run_url(ui_base, exp_id, run_id) for run_id in trials["run_id"]])
    return table.reset_index(drop=True)


def param_differences(trials: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame:
    """The parameters on which the trials `run_ids` differ: one row each, a column a trial."""
    picked = _picked(trials, run_ids)
    params = [c for c in trials.columns if c.startswith("param.") and c != "param.searched"]
    table = picked[params].T.map(_param_text)
    table = table[picked[params].T.astype(str).nunique(axis=1) > 1]
    return table.rename(index=lambda p: p.removeprefix("param."))


def _param_text(value: Any) -> str:
    """A param's value as a user wrote it; NOT_DRAWN where the trial did not draw it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_DRAWN
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def metric_comparison(
    trials: pd.DataFrame, run_ids: Sequence[str], metrics: Sequence[str]
) -> pd.DataFrame:
    """`metrics` of the trials `run_ids`: one row per metric, one column per trial."""
    return _picked(trials, run_ids).reindex(columns=list(metrics)).T


def member_accuracies(trials: pd.DataFrame, run_ids: Sequence[str], split: str) -> pd.DataFrame:
    """Long frame (trial, member, acc) of each head's accuracy on `split`."""
    picked = _picked(trials, run_ids)
    columns = [c for c in picked.columns if c.startswith(f"{split}/acc_member")]
    long = picked[columns].rename_axis("trial").reset_index()
    long = long.melt(id_vars="trial", var_name="member", value_name="acc").dropna()
    long["member"] = long["member"].str.removeprefix(f"{split}/acc_")
    return long


def calibration(trials: pd.DataFrame, run_ids: Sequence[str], split: str) -> pd.DataFrame:
    """Long frame (trial, metric, scaling, value): NLL and ECE before and after temperature
    scaling (the test split uses the validation temperature)."""
    picked = _picked(trials, run_ids)
    rows = [
        {"trial": trial, "metric": metric, "scaling": scaling, "value": row.get(column)}
        for trial, row in picked.iterrows()
        for metric in ("nll", "ece")
        for scaling, column in (("before", f"{split}/{metric}"), ("after", f"{split}/{metric}_ts"))
    ]
    return pd.DataFrame(rows, columns=["trial", "metric", "scaling", "value"]).dropna()


def _picked(trials: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame:
    """The rows of `run_ids`, in that order, indexed by trial id."""
    return trials.set_index("run_id").loc[list(run_ids)].set_index("trial_id")


@st.cache_data(ttl=HISTORY_TTL_S, show_spinner=False)
def histories(uri: str, run_ids: tuple[str, ...], metrics: tuple[str, ...]) -> pd.DataFrame:
    """Per-epoch values (run_id, metric, step, value) of `metrics` for `run_ids`."""
    return tracking.metric_histories(
        tracking.connect(uri, create=False), list(run_ids), list(metrics)
    )


def published_note(preset: str, trials: pd.DataFrame) -> str | None:
    """The paper's number for the search's preset beside this search's best test accuracy,
    each with the protocol behind it; None when the preset reproduces no published number."""
    from mixmo_search.config import list_presets, published

    if preset not in list_presets():
        return None
    paper = published(preset)
    if paper is None:
        return None
    shown = f"{paper.low:.2%}" if paper.low == paper.high else f"{paper.low:.2%}–{paper.high:.2%}"
    note = f"Published for `{preset}`: {paper.metric} {shown} ({paper.protocol}; {paper.source})."
    finished = trials[trials["status"] == "finished"] if not trials.empty else trials
    metric = paper.metric  # reported metrics drop `final/`: test/acc of the kept epoch
    if not finished.empty and metric in finished and finished[metric].notna().any():
        best = finished.loc[finished[metric].idxmax()]
        note += (
            f" This search's trials: holdout protocol (trained without the validation split, "
            f"best validation epoch), {metric} up to {best[metric]:.2%} (trial "
            f"{best['trial_id']}); compare a `--set run.protocol=paper` training for a like "
            "for like number."
        )
    return note


def reference_table(preset: str, trials: pd.DataFrame) -> pd.DataFrame:
    """The published uncertainty figures that match `preset` (mixmo_search.references), one
    row each, then this search's best finished trial on test/acc with the same metrics;
    empty when none matches."""
    from mixmo_search.references import references

    published = references(preset)
    if not published:
        return pd.DataFrame()
    rows = [{"method": r.method, **r.metrics, "note": r.note, "corrupted set": r.corrupted_set}
            for r in published]  # fmt: skip
    columns = list(published[0].metrics)
    finished = trials[trials["status"] == "finished"] if not trials.empty else trials
    if not finished.empty and "test/acc" in finished and finished["test/acc"].notna().any():
        best = finished.loc[finished["test/acc"].idxmax()]
        rows.append({"method": f"this search: trial {best['trial_id']}",
                     **{c: best.get(c) for c in columns},
                     "note": "holdout protocol, best validation epoch",
                     "corrupted set": "data.corruptions_test of the search"})  # fmt: skip
    return pd.DataFrame(rows)


def reference_note(preset: str, metric: str) -> str | None:
    """The published values of `metric` for `preset`, in a sentence, or None."""
    from mixmo_search.references import references

    found = [r for r in references(preset) if metric in r.metrics]
    if not found:
        return None
    values = "; ".join(f"{r.method} {r.metrics[metric]:.2%}" for r in found)
    where = f"on {found[0].corrupted_set}; {found[0].source}"
    return f"Published for `{preset}`, {metric}: {values} ({where})."
