"""A search's trials as one table (pandas), for the dashboard, `promote` and the summary.

`load_trials` reads SQLite and PostgreSQL stores with a few SQL queries over MLflow's tables
(a search of thousands of trials opens in about a second); other stores go through MLflow's
`search_runs`. The store's layout is described in `tracking`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mixmo_search.tracking import ERROR, KIND, OPTUNA_TRIAL, PARENT, PARETO, STATUS, TRIAL_ID

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

SQL_SCHEMES = ("sqlite", "postgresql")  # stores `load_trials` reads with SQL


def load_trials(client: MlflowClient, exp_id: str, parent_id: str) -> pd.DataFrame:
    """One row per trial: run id, trial id, status, error, Pareto flag, start time, epochs run
    (the last step logged), Optuna trial number (NaN unless tagged), params (`param.*`, typed
    back from strings) and latest metrics. Rows newest first, as `search_runs` orders them."""
    if client.tracking_uri.split(":", 1)[0].split("+", 1)[0] in SQL_SCHEMES:
        return _load_trials_sql(client.tracking_uri, exp_id, parent_id)
    return _load_trials_api(client, exp_id, parent_id)


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
