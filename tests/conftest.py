"""Shared fixtures: a real small search, run once per test session through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

SPACES = Path(__file__).parent / "spaces"


@dataclass(frozen=True)
class SearchStore:
    """Where a finished real search left its MLflow store and Tune storage."""

    uri: str
    storage: Path
    name: str
    parent_run_id: str
    space: Path
    log: str
    n_trials: int


def _run_tune(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python -m mixmo_search.tune ARGS` in `cwd`, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "mixmo_search.tune", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


@pytest.fixture(scope="session")
def run_tune():
    return _run_tune


def _wait_until(
    condition, timeout: float, what: str, proc: subprocess.Popen | None = None, every: float = 1
):
    """`condition()`'s first truthy value, polled `every` s; fails after `timeout` s, or as
    soon as `proc` (the process expected to bring it about) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def wait_until():
    return _wait_until


def _asha_rule(decisions: list[dict], *, reduction_factor: float, mode: str, max_t: int) -> None:
    """Replay asha's recorded decisions in order, each against the rule over the rung's
    earlier records: stop exactly when the value is below the (1 - 1/reduction_factor)
    quantile of the values recorded at that rung before it (numpy's nanpercentile, as Ray
    computes it); every trial reaching max_t stops."""
    import warnings

    import numpy as np

    sign = 1 if mode == "max" else -1
    seen: dict[float, list[float]] = {}
    for d in decisions:
        if d["rung"] >= max_t:
            assert d["stop"], d
            continue
        earlier = seen.setdefault(d["rung"], [])
        with warnings.catch_warnings():  # a rung of NaN values so far: no cutoff
            warnings.simplefilter("ignore", RuntimeWarning)
            q = (1 - 1 / reduction_factor) * 100
            cutoff = np.nanpercentile([sign * v for v in earlier], q) if earlier else None
        assert d["stop"] == bool(cutoff is not None and sign * d["value"] < cutoff), (d, earlier)
        earlier.append(d["value"])


@pytest.fixture(scope="session")
def asha_rule():
    return _asha_rule


@pytest.fixture(scope="session")
def search_store(tmp_path_factory) -> SearchStore:
    """A real multi-objective search (Ray, Optuna, MLflow, training on digits)."""
    root = tmp_path_factory.mktemp("search")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    space = SPACES / "pareto_small.yaml"
    done = _run_tune(
        "--space", str(space), "--gpus", "0", "--cpus", "2", "--storage", str(root / "runs"),
        "--mlflow-uri", uri, "--name", "fixture", cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    meta = json.loads((root / "runs" / "fixture" / "search.json").read_text())
    n_trials = yaml.safe_load(space.read_text())["budget"]["trials"]
    return SearchStore(
        uri, root / "runs", "fixture", meta["parent_run_id"], space, done.stdout, n_trials
    )


@pytest.fixture(scope="session")
def private_store(search_store):
    """`copy(folder) -> uri`: a writable copy of the session's search store."""

    def copy(folder: Path) -> str:
        """A copy of the session's search store that this module may write to.

        MLflow records absolute artifact locations, so after copying the database and its
        `mlartifacts/` we point them at the copy: new runs and models then land in `folder` and
        the shared store stays as the other tests expect it.
        """
        source_db = Path(search_store.uri.removeprefix("sqlite:///"))
        shutil.copy(source_db, folder / "mlflow.db")
        shutil.copytree(source_db.parent / "mlartifacts", folder / "mlartifacts")
        old, new = (source_db.parent / "mlartifacts").as_uri(), (folder / "mlartifacts").as_uri()
        with sqlite3.connect(folder / "mlflow.db") as db:
            db.execute(
                "UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)",
                (old, new),
            )
            db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, new))
        return f"sqlite:///{folder / 'mlflow.db'}"

    return copy
