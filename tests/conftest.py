"""Shared fixtures: a real small search, run once per test session through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests import asha, waiting
from tests.waiting import scaled

SPACES = Path(__file__).parent / "spaces"
TESTS = Path(__file__).parent

# Tiers (pyproject.toml's markers; `make test-quick` deselects them): whole folders and
# files by path here, single slow tests by their own @pytest.mark.slow.
TIER_OF_PATH = {
    "cluster/": "cluster",
    "app/test_dashboard_browser.py": "browser",
    "search/test_tune.py": "slow",  # each test runs real searches through the CLI
}
# a real search, or the tune CLI in a subprocess
SEARCH_FIXTURES = {"search_store", "ensemble_store", "private_store", "run_tune"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.relative_to(TESTS).as_posix()
        for prefix, marker in TIER_OF_PATH.items():
            if path.startswith(prefix):
                item.add_marker(marker)
        if SEARCH_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("slow")


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
        cwd=cwd, capture_output=True, text=True, timeout=scaled(timeout),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


@pytest.fixture(scope="session")
def run_tune():
    return _run_tune


def _wait_until(
    condition, timeout: float, what: str, proc: subprocess.Popen | None = None, every: float = 1
):
    """`condition()`'s first truthy value, polled `every` s (tests.waiting.wait_until, so the
    timeout scales); fails as soon as `proc` (the process expected to bring it about) exits."""

    def check():
        found = condition()
        if not found and proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}")
        return found

    return waiting.wait_until(check, timeout, what, interval=every)


@pytest.fixture(scope="session")
def wait_until():
    return _wait_until


@pytest.fixture(scope="session")
def asha_rule():
    return asha.asha_rule


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


@dataclass(frozen=True)
class EnsembleStore:
    """A finished real search with vanilla (M = 1) and MixMo (M = 2) trials."""

    uri: str
    parent_run_id: str
    name: str
    storage: Path  # the search's folder: Tune's trials and the Optuna study


@pytest.fixture(scope="session")
def ensemble_store(run_tune, tmp_path_factory) -> EnsembleStore:
    """tests/spaces/ensembles_small.yaml run through the CLI: 3 vanilla and 3 MixMo trials of
    3 digits epochs, all finished, each with its inference cost and stored predictions, an
    OOD set and generated corruptions, selected on the mean corrupted val accuracy."""
    root = tmp_path_factory.mktemp("ensembles")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    done = run_tune(
        "--space", str(SPACES / "ensembles_small.yaml"), "--gpus", "0", "--cpus", "2",
        "--storage", str(root / "runs"), "--mlflow-uri", uri, "--name", "vanilla-vs-mixmo",
        cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = root / "runs" / "vanilla-vs-mixmo"
    parent = json.loads((folder / "search.json").read_text())["parent_run_id"]
    return EnsembleStore(uri, parent, "vanilla-vs-mixmo", folder)


@pytest.fixture(scope="session")
def private_store(search_store):
    """`copy(folder) -> uri`: a writable copy of the session's search store."""

    def copy(folder: Path, source_uri: str = search_store.uri) -> str:
        """A copy of the session's search store (or of the store `source_uri`) that this
        module may write to.

        MLflow records absolute artifact locations, so after copying the database and its
        `mlartifacts/` we point them at the copy: new runs and models then land in `folder` and
        the shared store stays as the other tests expect it.
        """
        source_db = Path(source_uri.removeprefix("sqlite:///"))
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


@dataclass(frozen=True)
class DigitsNetwork:
    """A digits_quick network trained once, with its data and training folder."""

    network: object  # inference.LoadedNetwork
    dataset: object  # datasets.Dataset
    out_dir: Path


@pytest.fixture(scope="session")
def digits_network(tmp_path_factory) -> DigitsNetwork:
    """digits_quick trained for real, 6 epochs (about 95 % test accuracy, 5 s on a quiet
    CPU), its best epoch loaded."""
    import torch

    from mixmo_search.config import resolve_config
    from mixmo_search.datasets import load_dataset
    from mixmo_search.inference import InputFormat, build_network
    from mixmo_search.train import train

    out_dir = tmp_path_factory.mktemp("digits") / "run"
    overrides = {"optim.epochs": 6, "optim.milestones": [4, 6], "run.out_dir": str(out_dir),
                 "run.progress": False}  # fmt: skip
    cfg = resolve_config(preset="digits_quick", overrides=overrides)
    assert train(cfg)["test/acc"] > 0.9
    dataset = load_dataset(cfg.data)
    state = torch.load(out_dir / "best.pt", weights_only=True)["model"]
    return DigitsNetwork(build_network(cfg, InputFormat.of(dataset), state), dataset, out_dir)
