"""The one MLflow writer and reader: searches are parent runs, trials are nested child runs.

Layout of the store (the dashboard and `promote` read it through the functions below):

- experiment `mixmo-search` (or `--experiment`), artifacts next to a SQLite store;
- one parent run per search: tags `mixmo.kind=search`, `mixmo.search=<name>`, the sampler,
  objectives (JSON), storage path, code revision, space digest; artifacts `space.yaml`,
  `versions.json`, and at the end `summary.json`; metrics `trials/*` counts;
- one child run per trial (tag `mlflow.parentRunId`): tags `mixmo.kind=trial`,
  `mixmo.trial_id`, `mixmo.status` (running, finished, pruned, failed, interrupted, out_of_time),
  `mixmo.error` for failures, `mixmo.pareto`, and `mixmo.optuna_trial` (the Optuna trial
  number); a pruned trial's run is KILLED and named `<trial> (pruned at epoch E)`;
  params = the whole resolved training config
  (`section.key`); per-epoch metrics with step = epoch (`train/*`, `val/*`, `lr`, `p`);
  for finished trials `final/val/*`, `final/test/*` (the best validation epoch's model) and
  `final/cost/*` (its inference cost), and the artifacts `predictions/{val,test}.npz` and
  `checkpoint/best.pt`.

A search's trials as one table: `trial_table.load_trials`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixmo_search.errors import UserError
from mixmo_search.files import unwritable

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from mixmo_search.predictions import Predictions

EXPERIMENT = "mixmo-search"
KIND, SEARCH, TRIAL_ID, STATUS, ERROR, PARETO, OPTUNA_TRIAL, STORAGE = (
    "mixmo.kind", "mixmo.search", "mixmo.trial_id", "mixmo.status", "mixmo.error",
    "mixmo.pareto", "mixmo.optuna_trial", "mixmo.storage",
)  # fmt: skip
# the parent run of a search
BEST_TRIAL, OBJECTIVES, SAMPLER, SPACE_FILE, SPACE_DIGEST, CODE_REVISION = (
    "mixmo.best_trial", "mixmo.objectives", "mixmo.sampler", "mixmo.space_file",
    "mixmo.space_digest", "mixmo.code_revision",
)  # fmt: skip
SIMULATED_GPUS = "mixmo.simulated_gpus"  # a test search on logical GPUs (MIXMO_SIMULATE_GPUS)
PLACEMENT_PREFIX = "mixmo.placement."  # a trial's GPUs and device, from its reports
# a promotion's run and registered version
TRIAL_RUN_ID, POLICY, CHOSEN_BY, MIN_ACC, PROMOTED_TRIAL, PROMOTE_CODE_REVISION = (
    "mixmo.trial_run_id", "mixmo.policy", "mixmo.chosen_by", "mixmo.min_acc",
    "mixmo.promoted_trial",  # not TRIAL_ID: `trial_runs` maps that tag to the search's trials
    "mixmo.promote_code_revision",
)  # fmt: skip
PARENT = "mlflow.parentRunId"
# a pruned trial was stopped early by the scheduler: KILLED in the MLflow UI, and its run is
# renamed "<trial> (pruned at epoch E)"; the `mixmo.status` tag tells it from an interruption
# or the search's time budget (search/outcomes.py says which is which)
TERMINAL_MLFLOW = {"finished": "FINISHED", "pruned": "KILLED", "failed": "FAILED",
                   "interrupted": "KILLED", "out_of_time": "KILLED"}  # fmt: skip


# store URI scheme -> the Python driver it needs ("" for none)
STORE_SCHEMES = {"sqlite": "", "postgresql": "psycopg", "mysql": "", "http": "", "https": ""}
STORE_DRIVERS = {"psycopg": "'psycopg[binary]'"}
SQLITE_HEADER = b"SQLite format 3\x00"


class TrackingError(UserError):
    """The MLflow store cannot be reached or does not hold what was asked for."""


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite store `mlflow.db` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def absolute_uri(uri: str) -> str:
    """`uri` with a relative SQLite path made absolute (from the working directory), so the
    search, its trials and every printed command name the same file."""
    path = sqlite_path(uri)
    if path is None or path.is_absolute() or not str(path) or str(path).startswith(":"):
        return uri
    return f"sqlite:///{path.expanduser().absolute()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, None for other stores."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_store(uri: str) -> None:
    """Refuse a store URI this tool cannot use, without writing anything (plan time).

    A SQLite file must be a SQLite database (or not exist yet, in a writable folder); other
    stores must use a scheme MLflow serves searches from, with their driver installed.
    """
    if _has_login(uri):  # before any message that would show the URI
        raise TrackingError(
            "the MLflow store URI carries a login (USER:PASSWORD@), which search.json, MLflow "
            "tags and printed commands would show; drop it from the URI and give the login "
            "with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or in "
            "~/.mlflow/credentials (mode 0600)"
        )
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if scheme not in STORE_SCHEMES:
        raise TrackingError(
            f"unsupported MLflow store {uri!r}; use one of: sqlite:///PATH (default "
            "sqlite:///mlflow.db), postgresql://USER@HOST/DB, mysql://..., or the http(s):// "
            "address of an MLflow server"
        )
    path = sqlite_path(uri)
    if scheme == "sqlite" and (path is None or not str(path) or str(path).startswith(":")):
        raise TrackingError(
            f"the MLflow store {uri!r} is in memory: its runs would vanish with the search and "
            "its trials could not reach it; give a file, e.g. sqlite:///mlflow.db"
        )
    if path is not None:
        _check_sqlite_file(path)
    elif STORE_SCHEMES[scheme] and importlib.util.find_spec(STORE_SCHEMES[scheme]) is None:
        raise TrackingError(
            f"the MLflow store {uri!r} needs the {STORE_SCHEMES[scheme]} driver; "
            f"`pip install {STORE_DRIVERS[STORE_SCHEMES[scheme]]}`"
        )


def _has_login(uri: str) -> bool:
    """Whether an http(s) URI names a user or password (`http://USER:PASSWORD@HOST`)."""
    from urllib.parse import urlsplit

    if not uri.startswith(("http://", "https://")):
        return False  # database URIs: the password check is the driver's (libpq's files)
    try:
        parts = urlsplit(uri)
        return parts.username is not None or parts.password is not None
    except ValueError:
        return "@" in uri.split("://", 1)[1].split("/", 1)[0]


def login_refused(uri: str) -> str:
    """Why a server that asks for a login refused this process, and the fix (no password)."""
    from mlflow.utils.credentials import read_mlflow_creds

    user = read_mlflow_creds().username
    where = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials"
    if not user:
        return (
            f"the MLflow server {uri} asks for a login and none is set: give the user and "
            f"password with {where} (mode 0600; infra/README.md, MLflow's login)"
        )
    return (
        f"the MLflow server {uri} refused the login of user {user!r} (a wrong password, or no "
        f"such user): check the password in {where}; an MLflow admin makes users with "
        "infra/mlflow-users.py"
    )


def http_status(err: BaseException) -> int | None:
    """The HTTP status an MLflow error stands for (401 refused login, 403 no permission)."""
    from mlflow.exceptions import MlflowException

    return err.get_http_status_code() if isinstance(err, MlflowException) else None


def _check_sqlite_file(path: Path) -> None:
    if path.is_dir():
        raise TrackingError(f"the MLflow store {path} is a folder; give a .db file path")
    if path.exists():
        with path.open("rb") as db:
            header = db.read(len(SQLITE_HEADER))
        if header and header != SQLITE_HEADER:
            raise TrackingError(
                f"{path} is not a SQLite database, so it cannot be the MLflow store; pass "
                "another --mlflow-uri (e.g. sqlite:///mlflow.db)"
            )
        return
    reason = unwritable(path)
    if reason:
        raise TrackingError(
            f"cannot create the MLflow store {path}: {reason}; pass --mlflow-uri "
            "sqlite:///A/WRITABLE/PATH.db"
        )


def connect(uri: str, *, create: bool = True) -> MlflowClient:
    """A client for `uri`, checked to answer (a clear error instead of a long retry loop).

    `create=False` is for readers (dashboard, promote, predict): a missing SQLite file is
    reported instead of being created empty. The first connection to a SQLite file creates
    or migrates its tables; it holds an exclusive lock on the file meanwhile, so searches and
    dashboards that open one new store at the same moment take turns instead of racing in
    MLflow's migrations.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # a server's client prints two "View run" lines per ended run: the search says its own
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    from mlflow import MlflowClient

    check_store(uri)
    path = sqlite_path(uri)
    if path is not None and not create and not path.is_file():
        raise TrackingError(
            f"no MLflow store at {path}: run a search first (python -m mixmo_search.tune "
            f"--mlflow-uri {uri} ...), or pass the URI of an existing store with --mlflow-uri"
        )
    try:
        with _first_use_lock(path):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - any failure here means "unusable"
        if http_status(err) == 401:
            raise TrackingError(login_refused(uri)) from None
        what = f"open the MLflow store {path}" if path else f"reach the MLflow store {uri!r}"
        fix = (
            "if the file is damaged, move it aside and let the next search start a new one"
            if path
            else "start the server, or pass another URI with --mlflow-uri"
        )
        raise TrackingError(
            f"cannot {what} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); {fix}"
        ) from None
    return client


def connect_existing(uri: str) -> MlflowClient:
    """`connect` for a store that must exist already (readers)."""
    return connect(uri, create=False)


@contextmanager
def _first_use_lock(path: Path | None) -> Iterator[None]:
    """An exclusive lock on the SQLite file (created empty if missing) for the block."""
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    # flock on the database file itself: SQLite locks with fcntl byte ranges, which flock
    # does not touch, and no lock file is left behind
    with path.open("ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_experiment(uri: str, name: str) -> None:
    """Refuse an experiment MLflow holds as deleted (it takes no runs), without writing: a
    SQLite store is read directly, a server only when it is already known to answer."""
    import sqlite3

    path = sqlite_path(uri)
    if path is None or not path.is_file():
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT lifecycle_stage FROM experiments WHERE name = ?", (name,)
            ).fetchone()
    except sqlite3.Error:
        return  # an empty or older store: `connect` creates or migrates it
    if row is not None and row[0] == "deleted":
        raise TrackingError(
            f"the experiment {name!r} of {uri} is deleted; restore it (`mlflow experiments "
            f"restore`) or pass another --experiment"
        )


def experiment_id(client: MlflowClient, name: str = EXPERIMENT, *, create: bool = True) -> str:
    """The experiment's id; created with artifacts beside a SQLite store when missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if not create:
        raise TrackingError(f"the MLflow store has no experiment {name!r}; run a search first")
    from mlflow.exceptions import MlflowException

    path = sqlite_path(client.tracking_uri)
    location = (path.parent / "mlartifacts").as_uri() if path else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another process created it a moment ago
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def start_search_run(
    client: MlflowClient, exp_id: str, *, name: str, tags: dict[str, str],
    params: dict[str, Any], artifacts: dict[str, str],
) -> str:  # fmt: skip
    """Create the parent run of a search, with its tags, params and text artifacts."""
    run = client.create_run(exp_id, run_name=name, tags={KIND: "search", SEARCH: name, **tags})
    log_params(client, run.info.run_id, params)
    for file_name, text in artifacts.items():
        client.log_text(run.info.run_id, text, file_name)
    return run.info.run_id


def quoted(value: str) -> str | None:
    """`value` as a string literal of MLflow's search filters; None when it holds both
    quote characters, which no literal can (so nothing can match it)."""
    if "'" not in value:
        return f"'{value}'"
    return None if '"' in value else f'"{value}"'


def find_search_run(client: MlflowClient, exp_id: str, name: str) -> str | None:
    literal = quoted(name)
    if literal is None:
        return None
    runs = client.search_runs(
        [exp_id], f"tags.`{KIND}` = 'search' and tags.`{SEARCH}` = {literal}",
        order_by=["attributes.start_time DESC"], max_results=1,
    )  # fmt: skip
    return runs[0].info.run_id if runs else None


def trial_runs(client: MlflowClient, exp_id: str, parent_id: str) -> dict[str, str]:
    """{trial_id: run_id} of a search's child runs."""
    runs = trial_run_records(client, exp_id, parent_id)
    return {r.data.tags[TRIAL_ID]: r.info.run_id for r in runs}


def trial_run_records(client: MlflowClient, exp_id: str, parent_id: str) -> list[Any]:
    """The MLflow runs (tags, params, latest metrics) of a search's trials."""
    runs = client.search_runs([exp_id], f"tags.`{PARENT}` = '{parent_id}'", max_results=50000)
    return [r for r in runs if TRIAL_ID in r.data.tags]


def find_trial_run(client: MlflowClient, exp_id: str, parent_id: str, trial_id: str) -> str | None:
    """The run of one trial of a search, if it has one."""
    literal = quoted(trial_id)
    if literal is None:
        return None
    query = f"tags.`{PARENT}` = '{parent_id}' and tags.`{TRIAL_ID}` = {literal}"
    runs = client.search_runs([exp_id], query, max_results=1)
    return runs[0].info.run_id if runs else None


def start_trial_run(
    client: MlflowClient, exp_id: str, parent_id: str, *, search: str, trial_id: str,
    params: dict[str, Any], tags: dict[str, str] | None = None,
) -> str:  # fmt: skip
    tags = {PARENT: parent_id, KIND: "trial", SEARCH: search, TRIAL_ID: trial_id,
            STATUS: "running", **(tags or {})}  # fmt: skip
    run = client.create_run(exp_id, run_name=trial_id, tags=tags)
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(run_id, params=items[start : start + 100])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, Any], *, step: int) -> None:
    """Log the numeric entries of `metrics` in one call (non-numbers are skipped)."""
    log_metric_batch(client, run_id, metric_batch(metrics, step=step))


def metric_batch(metrics: dict[str, Any], *, step: int) -> list[Any]:
    """The numeric entries of `metrics` as MLflow metric points of `step`, timestamped now.
    Logged again (a retry), the same points are ignored by MLflow, not stored twice."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [
        Metric(k, float(v), now, step)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]


def log_metric_batch(client: MlflowClient, run_id: str, batch: list[Any]) -> None:
    for start in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[start : start + 1000])


def set_status(
    client: MlflowClient, run_id: str, status: str, *, reason: str | None = None
) -> None:
    """Record a trial's or search's status tag and, when terminal, end the MLflow run."""
    client.set_tag(run_id, STATUS, status)
    if reason:
        client.set_tag(run_id, ERROR, reason[:5000])
    if status in TERMINAL_MLFLOW:
        client.set_terminated(run_id, TERMINAL_MLFLOW[status])
    elif status == "running":
        client.update_run(run_id, status="RUNNING")


# ---- readers (dashboard, promote, summaries) ----


def list_searches(client: MlflowClient, exp_id: str) -> pd.DataFrame:
    """One row per search (parent run): name, run id, status, start time, trial counts and, once
    it ended, its best trial and that trial's objectives (`final/*`)."""
    import pandas as pd

    runs = client.search_runs([exp_id], f"tags.`{KIND}` = 'search'", max_results=5000)
    rows = [
        {
            "search": r.data.tags.get(SEARCH, r.info.run_name),
            "run_id": r.info.run_id,
            "status": r.info.status,
            "start_time": pd.to_datetime(r.info.start_time, unit="ms"),
            "objectives": r.data.tags.get(OBJECTIVES, "[]"),
            "best_trial": r.data.tags.get(BEST_TRIAL, ""),
            "storage": r.data.tags.get(STORAGE, ""),
            "preset": r.data.params.get("preset", ""),
            **{k: v for k, v in r.data.metrics.items() if k.startswith(("trials/", "final/"))},
        }
        for r in runs
    ]
    return pd.DataFrame(rows)


def metric_histories(client: MlflowClient, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    """Every logged value of `keys` in `run_ids`: columns run_id, metric, step, value."""
    import pandas as pd

    rows = [
        (run_id, key, m.step, m.value)
        for run_id in run_ids
        for key in keys
        for m in client.get_metric_history(run_id, key)
    ]
    frame = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])
    return frame.sort_values(["run_id", "metric", "step"], ignore_index=True)


def download_predictions(client: MlflowClient, run_id: str, split: str) -> Predictions:
    """A finished trial's stored predictions `predictions/{split}.npz`."""
    import tempfile

    from mixmo_search.predictions import load_predictions

    with tempfile.TemporaryDirectory(prefix="mixmo-predictions-") as folder:
        return load_predictions(
            download_artifact(client, run_id, f"predictions/{split}.npz", folder)
        )


def search_space(client: MlflowClient, parent_id: str) -> dict[str, Any] | None:
    """The search's space file (the parent run's `space.yaml`), parsed; None without one."""
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory(prefix="mixmo-space-") as folder:
        try:
            path = client.download_artifacts(parent_id, "space.yaml", folder)
        except Exception:  # noqa: BLE001 - a search written without its space file
            return None
        return yaml.safe_load(Path(path).read_text())


def search_run_id(client: MlflowClient, exp_id: str, name: str) -> str:
    """The parent run of search `name` (the latest of that name), or an error naming the others."""
    run_id = find_search_run(client, exp_id, name)
    if run_id is None:
        known = sorted(set(list_searches(client, exp_id).get("search", [])))
        raise TrackingError(
            f"no search named {name!r} in the MLflow store {client.tracking_uri!r}; "
            f"known searches: {', '.join(known) or 'none (run python -m mixmo_search.tune)'}"
        )
    return run_id


def download_artifact(client: MlflowClient, run_id: str, path: str, dst: str | Path) -> Path:
    """Download one artifact of a run into the folder `dst`; a clear error if it is missing."""
    try:
        return Path(client.download_artifacts(run_id, path, str(dst)))
    except Exception as err:  # noqa: BLE001 - a missing file and a broken store read the same
        raise TrackingError(
            f"run {run_id} has no readable artifact {path!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); only finished trials keep their checkpoint"
        ) from None


def registered_model(client: MlflowClient, model_name: str) -> list[Any]:
    """`model_name` in the registry, as a list of one (none when it is not registered)."""
    literal = quoted(model_name)
    return [] if literal is None else client.search_registered_models(f"name = {literal}")


def model_versions(client: MlflowClient, model_name: str) -> list[Any]:
    """Every version of `model_name` (none when it is not registered)."""
    literal = quoted(model_name)
    return [] if literal is None else client.search_model_versions(f"name = {literal}")


def alias_holder(client: MlflowClient, model_name: str, alias: str) -> Any | None:
    """The version of `model_name` that holds `alias`, or None (no such model or alias).
    Registry reads live here, not in `serving`, so a reader needs no torch."""
    found = registered_model(client, model_name)
    if not found or alias not in found[0].aliases:
        return None
    return client.get_model_version(model_name, found[0].aliases[alias])


def summary_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, default=str)
