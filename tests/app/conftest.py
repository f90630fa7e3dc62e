"""Dashboard fixtures: the session's real search store, plus stores in the states a user can
meet before or during a search (written through the real `tracking` writer)."""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixmo_search import tracking

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `app` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))


SPACES = Path(__file__).resolve().parents[1] / "spaces"


@pytest.fixture
def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> str:
    """A store whose experiment exists but holds no search."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('empty') / 'mlflow.db'}"
    tracking.experiment_id(tracking.connect(uri))
    return uri


@pytest.fixture(scope="session")
def running_store(tmp_path_factory) -> tuple[str, str]:
    """(uri, parent run id) of a search still running, with no finished trial: one trial
    running after two epochs, one pruned after one."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('running') / 'mlflow.db'}"
    client = tracking.connect(uri)
    exp_id = tracking.experiment_id(client)
    parent = tracking.start_search_run(
        client,
        exp_id,
        name="live",
        tags={"mixmo.objectives": '[{"metric": "val/acc", "mode": "max"}]'},
        params={"sampler": "random"},
        artifacts={},
    )
    for trial_id, block, epochs, status in (
        ("aaa", "cut", 2, "running"),
        ("bbb", "linear", 1, "pruned"),
    ):
        run_id = tracking.start_trial_run(
            client,
            exp_id,
            parent,
            search="live",
            trial_id=trial_id,
            params={
                "mixing.block": block,
                "model.n_members": 2,
                "mixing.p": 0.5,
                "searched": ["mixing.block"],
            },
        )
        for epoch in range(1, epochs + 1):
            metrics = {"val/acc": 0.3 * epoch, "val/disagreement": 0.5 / epoch, "val/nll": 2.0}
            tracking.log_metrics(client, run_id, metrics, step=epoch)
        tracking.set_status(client, run_id, status)
    return uri, parent


@pytest.fixture
def unreachable_uri(free_port) -> str:
    """An HTTP tracking URI nothing listens on."""
    return f"http://127.0.0.1:{free_port}"


@dataclass(frozen=True)
class TruthStore:
    """tests/spaces/one_truth.yaml run through the CLI: where its store, study and output are."""

    uri: str
    name: str
    parent_run_id: str
    folder: Path  # the search's folder: Tune's trials, optuna.db, search.json
    stdout: str

    @property
    def study_url(self) -> str:
        return f"sqlite:///{self.folder / 'optuna.db'}"


@pytest.fixture(scope="session")
def truth_store(run_tune, tmp_path_factory) -> TruthStore:
    """A real search with a conditional param, a tie and an all-pruned value (about a minute
    and a half on two busy cores: six digits trials, one at a time)."""
    root = tmp_path_factory.mktemp("truth")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    done = run_tune(
        "--space", str(SPACES / "one_truth.yaml"), "--gpus", "0", "--cpus", "2",
        "--storage", str(root / "runs"), "--mlflow-uri", uri, "--name", "one-truth", cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = root / "runs" / "one-truth"
    parent = json.loads((folder / "search.json").read_text())["parent_run_id"]
    return TruthStore(uri, "one-truth", parent, folder, done.stdout)
