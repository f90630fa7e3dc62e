"""A search's trials as one record (a pandas frame) that every view reads: the summary and
`summary.json`, the dashboard, the MLflow Pareto tags and `promote`.

`load_trials` reads SQLite and PostgreSQL stores with a few SQL queries over MLflow's tables
(a search of thousands of trials opens in about a second); other stores go through MLflow's
`search_runs`. The store's layout is described in `tracking`. Its rules, each decided here
once:

- a trial's params are those it had: a conditional param its sampler did not draw (absent
  from its `searched` param, e.g. `mixing.block` of an M = 1 trial) is missing (NaN, shown
  as NOT_DRAWN), never the base value its config carried;
- its outcome is its `mixmo.status` tag (`search/outcomes.py` decides it);
- its metrics are what its trainer logged (`reported`: the kept epoch's when it finished);
- the best trial breaks ties as Optuna's `best_trial` does on its SQL storages: the lowest
  Optuna trial number (`best_first`);
- the Pareto set is `pareto.pareto_front` over the finished trials, on `pareto_axes`.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mixmo_search.pareto import pareto_front
from mixmo_search.tracking import (
    ERROR,
    KIND,
    OPTUNA_TRIAL,
    PARENT,
    PARETO,
    STATUS,
    TRIAL_ID,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

SQL_SCHEMES = ("sqlite", "postgresql")  # stores `load_trials` reads with SQL
# every `mixmo.status` a trial can carry: the outcome rule's values, and running
STATUSES = ("finished", "pruned", "running", "failed", "interrupted", "out_of_time")
NOT_DRAWN = "—"  # how a view shows a param the trial's sampler did not draw
SEARCHED = "param.searched"  # the keys a trial's sampler drew (fixed params included)
DIVERSITY = "val/disagreement"  # MixMo's other axis: how often the members disagree
BASE_COLUMNS = ("run_id", "trial_id", "optuna_trial", "status", "epochs", "error", "pareto",
                "start_time", "has_final")  # fmt: skip
_SPLIT_ORDER = {"val": 0, "test": 1, "train": 2}


def load_trials(client: MlflowClient, exp_id: str, parent_id: str) -> pd.DataFrame:
    """One row per trial: run id, trial id, status, error, Pareto tag, start time, epochs run
    (the last step logged), Optuna trial number (NaN unless tagged), params (`param.*`, typed
    back from strings; NaN where the trial did not draw them) and latest metrics (`final/*`
    included). Rows newest first, as `search_runs` orders them."""
    if client.tracking_uri.split(":", 1)[0].split("+", 1)[0] in SQL_SCHEMES:
        frame = _load_trials_sql(client.tracking_uri, exp_id, parent_id)
    else:
        frame = _load_trials_api(client, exp_id, parent_id)
    return _without_undrawn(frame)


def trial_record(client: MlflowClient, exp_id: str, parent_id: str) -> pd.DataFrame:
    """The search's trials as every view shows them: `reported(load_trials(...))`."""
    return reported(load_trials(client, exp_id, parent_id))


def searched_keys(value: Any) -> list[str]:
    """The keys of a trial's `searched` param (a list, logged as its repr); [] when missing."""
    if not isinstance(value, str):
        return []
    try:
        keys = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return []
    return [str(k) for k in keys] if isinstance(keys, list | tuple) else []


def _without_undrawn(frame: pd.DataFrame) -> pd.DataFrame:
    """Blank each param some trial's sampler drew in the rows of the trials whose sampler did
    not draw it: the config a trial trained kept the base value there, which is no value the
    trial had."""
    if frame.empty or SEARCHED not in frame:
        return frame
    parsed = {v: frozenset(searched_keys(v)) for v in frame[SEARCHED].unique()}  # a few kinds
    drawn = [parsed[v] for v in frame[SEARCHED]]
    for key in sorted(set().union(*drawn)):
        column = f"param.{key}"
        undrawn = [key not in keys for keys in drawn]
        if column in frame and any(undrawn):
            frame[column] = frame[column].mask(undrawn)
    return frame


def drawn_params(row: Mapping[str, Any], keys: list[str] | None = None) -> dict[str, Any]:
    """{key: value} of the params a trial's sampler drew (of `keys`, when given), from a
    row of the record; what it did not draw is absent."""
    drawn = searched_keys(row.get(SEARCHED))
    return {k: row.get(f"param.{k}") for k in (keys if keys is not None else drawn)
            if k in drawn}  # fmt: skip


def reported(raw: pd.DataFrame) -> pd.DataFrame:
    """Give each metric one value per trial: its best validation epoch's (`final/*`) when the
    trial finished, else its last epoch's. `final/` is dropped from the names (`test/*` only
    exist as final metrics); `has_final` says which a row holds. Columns: BASE_COLUMNS, the
    params, then the metrics (`metric_columns`' order)."""
    import pandas as pd

    if raw.empty:
        return pd.DataFrame(columns=list(BASE_COLUMNS))
    finals = [c for c in raw.columns if c.startswith("final/")]
    names = [c.removeprefix("final/") for c in finals]
    values = {
        name: raw[final].combine_first(raw[name]) if name in raw else raw[final]
        for name, final in zip(names, finals, strict=True)
    }
    frame = raw.drop(columns=finals + [n for n in names if n in raw])
    frame = pd.concat([frame, pd.DataFrame(values, index=raw.index)], axis=1)
    frame["has_final"] = raw[finals].notna().any(axis=1) if finals else False
    params = sorted(c for c in frame.columns if c.startswith("param."))
    return frame.reindex(columns=[*BASE_COLUMNS, *params, *metric_columns(frame)])


def metric_columns(trials: pd.DataFrame) -> list[str]:
    """The metric columns: validation first, then test, train, and the rest, by name."""
    names = [c for c in trials.columns if c not in BASE_COLUMNS and not c.startswith("param.")]

    def order(name: str) -> tuple[int, str]:
        return _SPLIT_ORDER.get(name.split("/")[0], len(_SPLIT_ORDER)), name

    return sorted(names, key=order)


def best_first(trials: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """The trials sorted on `metric`, best first in its direction (`mode`: max or min), ties
    broken as Optuna's `best_trial` breaks them on SQLite (the lowest trial number), then by
    start time and trial id; missing values last. Unchanged without such a column."""
    if metric not in trials:
        return trials
    keys = [metric, *(c for c in ("optuna_trial", "start_time", "trial_id") if c in trials)]
    ascending = [mode == "min"] + [True] * (len(keys) - 1)
    return trials.sort_values(keys, ascending=ascending, na_position="last", kind="stable")


def best_trial(trials: pd.DataFrame, metric: str, mode: str) -> dict[str, Any] | None:
    """The best finished trial on `metric` (`best_first`'s first), as a row; None when no
    finished trial has it."""
    if trials.empty or metric not in trials:
        return None
    finished = trials[(trials["status"] == "finished") & trials[metric].notna()]
    if finished.empty:
        return None
    return best_first(finished, metric, mode).head(1).to_dict("records")[0]


def pareto_axes(objectives: Mapping[str, str]) -> dict[str, str]:
    """{metric: mode} a search's Pareto set is taken on: its objectives when it has several,
    else its objective beside validation diversity (`val/disagreement`; `val/acc` when the
    objective is diversity): MixMo's accuracy-vs-diversity trade-off."""
    axes = dict(objectives) or {"val/acc": "max"}
    if len(axes) >= 2:
        return axes
    other = "val/acc" if DIVERSITY in axes else DIVERSITY
    return {**axes, other: "max"}


def pareto_run_ids(trials: pd.DataFrame, axes: Mapping[str, str]) -> list[str]:
    """Run ids of the finished trials no other finished trial dominates on `axes`
    ({metric column: mode}), in the frame's order; identical points are all on it."""
    if trials.empty:
        return []
    finished = trials[trials["status"] == "finished"]
    rows = finished.reindex(columns=list(axes)).to_dict("records")
    front = pareto_front(rows, list(axes), list(axes.values())) if rows else []
    return finished["run_id"].iloc[front].tolist()


def _trial_row(run_id: str, name: str, mlflow_status: str, start_ms: int,
               tags: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """The first columns of a trial's row (start time still in ms: converted per column)."""
    optuna_trial = tags.get(OPTUNA_TRIAL, "")
    return {
        "run_id": run_id,
        "trial_id": tags.get(TRIAL_ID, name),
        "status": tags.get(STATUS, mlflow_status.lower()),
        "error": tags.get(ERROR, ""),
        "pareto": tags.get(PARETO) == "true",
        "start_time": start_ms,
        "optuna_trial": float(optuna_trial) if optuna_trial.isdigit() else math.nan,
    }


def _load_trials_api(client: MlflowClient, exp_id: str, parent_id: str) -> pd.DataFrame:
    import pandas as pd

    # a search's other child runs (promotions) are not trials
    query = f"tags.`{PARENT}` = '{parent_id}' and tags.`{KIND}` = 'trial'"
    runs = client.search_runs([exp_id], query, max_results=50000)
    rows = []
    for r in runs:
        row = _trial_row(r.info.run_id, r.info.run_name, r.info.status, r.info.start_time,
                         r.data.tags)  # fmt: skip
        steps = [m.step for m in r.to_proto().data.metrics]  # public Run data holds no steps
        row["epochs"] = float(max(steps)) if steps else math.nan
        row.update({f"param.{k}": _parse(v) for k, v in r.data.params.items()})
        row.update(r.data.metrics)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["start_time"] = pd.to_datetime(frame["start_time"], unit="ms")
    return frame


# The trial runs of one search: the same filter as `_load_trials_api`'s search_runs query.
_TRIAL_RUNS = """
WITH trial_runs AS (
    SELECT r.run_uuid, r.name, r.status, r.start_time FROM runs r
    JOIN tags parent ON parent.run_uuid = r.run_uuid AND parent.key = :parent_key
    JOIN tags kind ON kind.run_uuid = r.run_uuid AND kind.key = :kind_key
    WHERE r.experiment_id = :exp_id AND r.lifecycle_stage = 'active'
      AND parent.value = :parent_id AND kind.value = 'trial'
)
"""


def _load_trials_sql(uri: str, exp_id: str, parent_id: str) -> pd.DataFrame:
    """`_load_trials_api`'s frame, read from MLflow's tables (runs, tags, params,
    latest_metrics) in five queries instead of one object per run."""
    import pandas as pd
    from sqlalchemy import bindparam, text

    args = {"parent_key": PARENT, "kind_key": KIND, "exp_id": int(exp_id),
            "parent_id": parent_id}  # fmt: skip
    tag_keys = [TRIAL_ID, STATUS, ERROR, PARETO, OPTUNA_TRIAL]
    with _engine(uri).connect() as db:
        runs = pd.read_sql(
            text(_TRIAL_RUNS + "SELECT run_uuid, name, status, start_time FROM trial_runs "
                 "ORDER BY start_time DESC, run_uuid"), db, params=args,
        )  # fmt: skip
        tags = pd.read_sql(
            text(_TRIAL_RUNS + "SELECT t.run_uuid, t.key, t.value FROM tags t "
                 "JOIN trial_runs USING (run_uuid) WHERE t.key IN :tag_keys")
            .bindparams(bindparam("tag_keys", expanding=True)),
            db, params={**args, "tag_keys": tag_keys},
        )  # fmt: skip
        # most params (the base config) are the same in every trial: read each such value
        # once, and only the varying ones row by row
        keys = pd.read_sql(
            text(_TRIAL_RUNS + "SELECT p.key, COUNT(DISTINCT p.value) AS n_values, "
                 "COUNT(*) AS n_runs, MIN(p.value) AS value FROM params p "
                 "JOIN trial_runs USING (run_uuid) GROUP BY p.key"), db, params=args,
        )  # fmt: skip
        constant = keys[(keys["n_values"] == 1) & (keys["n_runs"] == len(runs))]
        varying = keys.loc[~keys.index.isin(constant.index), "key"].tolist()
        params = pd.read_sql(
            text(_TRIAL_RUNS + "SELECT p.run_uuid, p.key, p.value FROM params p "
                 "JOIN trial_runs USING (run_uuid) WHERE p.key IN :keys")
            .bindparams(bindparam("keys", expanding=True)),
            db, params={**args, "keys": varying or [""]},
        )  # fmt: skip
        metrics = pd.read_sql(
            text(_TRIAL_RUNS + "SELECT m.run_uuid, m.key, m.value, m.step, m.is_nan "
                 "FROM latest_metrics m JOIN trial_runs USING (run_uuid)"), db, params=args,
        )  # fmt: skip
    if runs.empty:
        return pd.DataFrame()
    by_run = {run_id: {} for run_id in runs["run_uuid"]}
    for run_id, key, value in tags.itertuples(index=False):
        by_run[run_id][key] = value
    base = pd.DataFrame(
        [
            _trial_row(run_id, name, status, start, by_run[run_id])
            for run_id, name, status, start in runs.itertuples(index=False)
        ]
    )
    base["start_time"] = pd.to_datetime(base["start_time"], unit="ms")
    order = pd.Index(runs["run_uuid"])
    epochs = metrics.groupby("run_uuid")["step"].max().reindex(order).astype(float)
    base["epochs"] = epochs.to_numpy()
    wide_params = params.pivot(index="run_uuid", columns="key", values="value").reindex(order)
    wide_params = wide_params.assign(**dict(zip(constant["key"], constant["value"], strict=True)))
    wide_params = wide_params.apply(_parse_column).add_prefix("param.")
    metrics["value"] = metrics["value"].where(~metrics["is_nan"].astype(bool), math.nan)
    wide_metrics = metrics.pivot(index="run_uuid", columns="key", values="value").reindex(order)
    frame = pd.concat(
        [base, wide_params.reset_index(drop=True), wide_metrics.reset_index(drop=True)], axis=1
    )
    frame.columns.name = None
    return frame


_ENGINES: dict[str, Any] = {}


def _engine(uri: str) -> Any:
    """One SQLAlchemy engine per store URI (it pools its connections)."""
    if uri not in _ENGINES:
        from sqlalchemy import create_engine

        _ENGINES[uri] = create_engine(uri)
    return _ENGINES[uri]


def _parse(value: str) -> Any:
    """MLflow stores params as strings; give numbers and booleans back their type."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(value, value)


def _parse_column(values: pd.Series) -> pd.Series:
    """`_parse` for a whole column of param strings; missing values stay missing."""
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() == values.notna().sum():  # every value a number: one cast
        return numbers
    parsed = {value: _parse(value) for value in values.dropna().unique()}  # a few distinct
    return values.map(parsed)
