"""The chaos soak's invariant checker (its soak is a benchmark: benchmarks/RESULTS.md).

The checker must flag what it is there to find: a metric point logged twice or lost in a
real MLflow store, a run left RUNNING, an asha decision against the rule or a pruned trial
asha never stopped. No search runs here: the stores are made by hand.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]


def _chaos():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "benchmarks" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


chaos = _chaos()


def _trial_run(client, exp_id: str, parent_id: str, trial_id: str, status: str = "finished"):
    from mixmo_search import tracking

    tags = {tracking.PARENT: parent_id, tracking.TRIAL_ID: trial_id, tracking.KIND: "trial",
            tracking.OPTUNA_TRIAL: "0", tracking.STATUS: status}  # fmt: skip
    return client.create_run(exp_id, tags=tags, run_name=trial_id).info.run_id


def test_a_duplicated_or_lost_point_and_a_running_run_are_flagged_in_a_real_store(tmp_path):
    from mixmo_search import tracking

    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = tracking.experiment_id(client)
    parent = client.create_run(exp_id, run_name="search").info.run_id
    clean, broken = (_trial_run(client, exp_id, parent, t) for t in ("aaaa", "bbbb"))
    for run in (clean, broken):
        for step in (1, 2, 3):
            client.log_metric(run, "val/acc", 0.1 * step, step=step)
            client.log_metric(run, "train/loss", 1.0 / step, step=step)
        client.log_metric(run, "final/val/acc", 0.3, step=3)  # logged once: not per epoch
    client.log_metric(broken, "val/acc", 0.2, step=2)  # the same epoch again, later
    client.set_terminated(parent)
    client.set_terminated(clean)
    runs = tracking.trial_run_records(client, exp_id, parent)

    found = chaos.metric_points(client, runs, {"aaaa": 3, "bbbb": 4})
    assert [v.kind for v in found] == ["metric_points"] * 3, found
    details = " | ".join(v.detail for v in found)
    assert "trial bbbb val/acc: steps [2] duplicated" in details
    assert "trial bbbb train/loss: steps [4] lost" in details  # Tune saw epoch 4
    assert "trial bbbb val/acc: steps [4] lost" in details
    assert chaos.metric_points(client, runs, {"aaaa": 3, "bbbb": 3}) != []
    assert chaos.running_runs(client, parent, runs) == [
        chaos.Violation("running_run", f"run {broken} RUNNING after its driver exited")
    ]


@given(st.lists(st.integers(1, 8), max_size=20), st.integers(0, 8))
def test_points_are_flagged_unless_each_epoch_is_logged_exactly_once(steps, epochs):
    found = chaos.point_violations("t", {"val/acc": steps}, epochs)
    assert (found == []) == (sorted(steps) == list(range(1, epochs + 1)))


def _decision(rung: float, trial: str, value: float, stop: bool) -> dict:
    return {"rung": rung, "trial_id": trial, "epoch": int(rung), "value": value,
            "cutoff": None, "stop": stop}  # fmt: skip


def test_a_decision_against_the_rule_and_a_pruned_trial_asha_kept_are_flagged(tmp_path):
    meta = {"base": {"optim.epochs": 6},
            "space_document": {"scheduler": {"type": "asha", "reduction_factor": 2},
                               "objective": [{"metric": "val/acc", "mode": "max"}]}}  # fmt: skip
    record = [_decision(1, "a", 0.5, False), _decision(1, "b", 0.4, True),
              _decision(1, "c", 0.9, False)]  # fmt: skip
    (tmp_path / "scheduler.jsonl").write_text("".join(json.dumps(d) + "\n" for d in record))
    assert chaos.asha_decisions(tmp_path, meta, []) == []

    wrong = [*record, _decision(1, "d", 0.1, False)]  # below the rung's median: must stop
    (tmp_path / "scheduler.jsonl").write_text("".join(json.dumps(d) + "\n" for d in wrong))
    found = chaos.asha_decisions(tmp_path, meta, [])
    assert [v.kind for v in found] == ["asha_rule"] and "'trial_id': 'd'" in found[0].detail

    from mixmo_search import tracking

    client = tracking.connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = tracking.experiment_id(client)
    parent = client.create_run(exp_id, run_name="search").info.run_id
    for trial, status in (("a", "pruned"), ("b", "pruned"), ("c", "finished")):
        _trial_run(client, exp_id, parent, trial, status)
    runs = tracking.trial_run_records(client, exp_id, parent)
    found = chaos.asha_decisions(tmp_path, meta, runs)
    assert [v.detail for v in found if "is pruned" in v.detail] == [
        "trial a is pruned, asha not stopped it"
    ]


def _process_named(name: str, seconds: float, *, new_session: bool) -> subprocess.Popen:
    """A real process whose command line reads `name` (as Ray names its workers)."""
    return subprocess.Popen(
        ["bash", "-c", f"exec -a '{name}' sleep {seconds}"], start_new_session=new_session
    )


def test_a_trial_process_outliving_its_driver_on_the_cluster_is_flagged_and_ended():
    stays = _process_named("ray::ImplicitFunc.train", 60, new_session=True)
    elsewhere = _process_named("ray::ImplicitFunc.train", 60, new_session=True)
    try:
        time.sleep(0.2)  # exec done: the names are in place
        assert chaos.trial_processes(stays.pid) == [stays.pid]
        assert chaos.trials_left(stays.pid, grace_s=1) == [
            f"ray::ImplicitFunc {stays.pid} on the cluster"
        ]
        assert stays.wait(timeout=10) == -signal.SIGKILL  # ended, not left behind
        assert chaos.trials_left(stays.pid, grace_s=1) == []
        assert elsewhere.poll() is None  # another session's trial is not this driver's
    finally:
        for proc in (stays, elsewhere):
            proc.kill()
            proc.wait()


def test_a_trial_process_that_ends_within_the_grace_is_not_flagged():
    ends = _process_named("ray::ImplicitFunc.train", 1, new_session=True)
    try:
        time.sleep(0.2)
        assert chaos.trial_processes(ends.pid) == [ends.pid]
        assert chaos.trials_left(ends.pid, grace_s=10) == []
        assert ends.wait(timeout=5) == 0
    finally:
        ends.kill()
        ends.wait()


def test_the_cluster_faults_exit_as_the_soak_expects(tmp_path):
    search = chaos.Search(tmp_path, "exits", "sqlite:///unused.db")
    try:
        refused = "mixmo_search.tune: cannot reach the MLflow store 'http://127.0.0.1:1' (...)"
        assert chaos.expected_exit("restart-mlflow", 0, search)
        assert chaos.expected_exit("restart-mlflow", 2, search, refused)  # down at start-up
        assert not chaos.expected_exit("restart-mlflow", 2, search, "some other error")
        assert not chaos.expected_exit("restart-mlflow", 1, search, refused)
        assert chaos.expected_exit("kill-node", 0, search)
        assert not chaos.expected_exit("kill-node", 1, search)
        assert not chaos.expected_exit("kill-node", 130, search)
        assert chaos.expected_exit("kill-worker", 0, search)
        assert chaos.expected_exit("sigterm-driver", 130, search)
        assert not chaos.expected_exit("sigterm-driver", 0, search)  # not finished: stopped
    finally:
        search.close()


def test_the_cluster_faults_need_the_cluster_and_are_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        chaos.main(["--faults", "kill-worker,kill-node", "--rounds", "1"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown faults ['kill-node'] (with --cluster)" in err
    with pytest.raises(SystemExit):
        chaos.main(["--cluster", "--faults", "kill-everything", "--rounds", "1"])
    assert "unknown faults ['kill-everything']; known: " in capsys.readouterr().err
