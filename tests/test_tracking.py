"""tracking: which stores are accepted, and a new SQLite store opened by many at once.

Real MLflow on real SQLite files; the concurrency tests start real processes that reach
MLflow's first connection (where it creates and migrates the tables) at the same moment.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mixmo_search import tracking, trial_table
from tests.waiting import scaled

SPACES = Path(__file__).parent / "spaces"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("foo://bar", "unsupported MLflow store 'foo://bar'"),
        ("./mlruns", "unsupported MLflow store"),
        ("sqlite:///{tmp}", "is a folder"),
        ("sqlite:///{tmp}/text.db", "is not a SQLite database"),
        ("sqlite:////proc/mixmo/m.db", "cannot create the MLflow store"),
        ("sqlite:///{tmp}/text.db/m.db", "is a file, not a folder"),
    ],
)
def test_unusable_stores_are_refused_before_anything_is_written(tmp_path, uri, expected):
    (tmp_path / "text.db").write_text("not a database\n")
    before = sorted(tmp_path.iterdir())
    with pytest.raises(tracking.TrackingError, match=expected):
        tracking.connect(uri.replace("{tmp}", str(tmp_path)))
    assert sorted(tmp_path.iterdir()) == before


def test_readers_never_create_a_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(tracking.TrackingError, match="no MLflow store at"):
        tracking.connect(uri, create=False)
    assert not (tmp_path / "none.db").exists()
    tracking.connect(uri)  # a search creates it
    assert tracking.connect(uri, create=False).search_experiments()


def test_a_damaged_store_is_one_clear_error(tmp_path):
    path = tmp_path / "mlflow.db"
    tracking.experiment_id(tracking.connect(f"sqlite:///{path}"))
    with sqlite3.connect(path) as db:  # a store whose schema is from no MLflow version
        db.execute("UPDATE alembic_version SET version_num = 'deadbeef'")
    code = (
        "from mixmo_search import tracking; "
        f"tracking.connect('sqlite:///{path}', create=False)"
    )  # a fresh process: MLflow caches the stores it has opened
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(120)
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "cannot open the MLflow store" in last and "move it aside" in last


def test_filter_literals_quote_what_they_can():
    assert tracking.quoted("plain") == "'plain'"
    assert tracking.quoted("it's") == '"it\'s"'
    assert tracking.quoted('it\'s "x"') is None


def _open_at_once(uri: str, barrier: multiprocessing.synchronize.Barrier, out) -> None:
    try:
        barrier.wait(timeout=scaled(60))
        client = tracking.connect(uri)
        out.put(tracking.experiment_id(client))
    except BaseException as err:  # noqa: BLE001 - reported to the test
        out.put(f"{type(err).__name__}: {err}")


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_many_processes_creating_one_new_store_take_turns(tmp_path, attempt):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(uri, barrier, out)) for _ in range(4)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=scaled(300)) for _ in procs]
    for proc in procs:
        proc.join(timeout=scaled(60))
    assert len(set(results)) == 1 and results[0].isdigit(), results  # one experiment, no error
    client = tracking.connect(uri, create=False)
    assert sorted(e.name for e in client.search_experiments()) == ["Default", tracking.EXPERIMENT]


READER = """
import sys
from app import queries
from mixmo_search import tracking
from tests.waiting import wait_until

def searches_seen():
    try:
        queries.searches.clear()
        return len(queries.searches(sys.argv[1]))
    except tracking.TrackingError as err:  # no store yet, or no experiment yet
        if "no MLflow store" not in str(err) and "no experiment" not in str(err):
            raise
        return 0

seen = wait_until(searches_seen, 240, "a search in the dashboard's query of the new store")
print("dashboard saw", seen, "searches")
"""


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_two_searches_and_the_dashboard_on_one_new_store_at_once(tmp_path, attempt):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    searches = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mixmo_search.tune",
                "--space",
                str(SPACES / "tiny.yaml"),
                "--gpus",
                "0",
                "--cpus",
                "1",
                "--name",
                f"s{i}",
                "--mlflow-uri",
                uri,
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    dashboard = subprocess.Popen(
        [sys.executable, "-c", READER, uri], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    outputs = [proc.communicate(timeout=scaled(600))[0] for proc in [*searches, dashboard]]
    for proc, output in zip([*searches, dashboard], outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]
    client = tracking.connect(uri, create=False)
    exp_id = tracking.experiment_id(client, create=False)
    found = tracking.list_searches(client, exp_id)
    assert sorted(found.search) == ["s0", "s1"] and set(found.status) == {"FINISHED"}
    for run_id in found.run_id:
        assert len(trial_table.load_trials(client, exp_id, run_id)) == 1
