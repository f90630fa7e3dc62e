"""summary: counts, best trial and findings from a trials frame; commands printed as pasted."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pandas as pd

from mixmo_search.search.plan import make_plan
from mixmo_search.search.space import load_space
from mixmo_search.search.summary import format_summary, resume_command, script, summarize

SPACES = Path(__file__).parents[1] / "spaces"


def _plan(tmp_path):
    space = load_space(SPACES / "pareto_small.yaml")
    return make_plan(space, gpus=0, cpus=2, storage=tmp_path / "runs",
                     mlflow_uri=f"sqlite:///{tmp_path / 'm.db'}", name="s1")  # fmt: skip


def _trials(rows):
    base = {"run_id": "r", "trial_id": "t", "status": "finished", "error": "", "pareto": False}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_a_search_with_no_finished_trial_still_summarises(tmp_path):
    trials = _trials([{"run_id": "a", "status": "pruned", "param.mixing.block": "cut",
                       "param.searched": "['mixing.block']"}])  # fmt: skip
    summary = summarize(trials, _plan(tmp_path))
    assert summary["best"] is None and summary["by_param"] == {}
    assert summary["counts"] == {"total": 1, "finished": 0, "pruned": 1, "failed": 0,
                                 "interrupted": 0, "out_of_time": 0, "running": 0}  # fmt: skip
    assert "no trial finished" in format_summary(
        {**summary, "interrupted": False}, _plan(tmp_path)
    )


def test_findings_count_only_the_trials_that_drew_the_param(tmp_path):
    drawn = "['mixing.block', 'model.n_members']"
    trials = _trials([
        {"run_id": "a", "param.mixing.block": "cut", "param.model.n_members": 2,
         "param.searched": drawn, "final/val/acc": 0.90},
        {"run_id": "b", "param.mixing.block": "linear", "param.model.n_members": 3,
         "param.searched": drawn, "final/val/acc": 0.80},
        {"run_id": "c", "param.mixing.block": "cut", "param.model.n_members": 3,
         "param.searched": "['model.n_members']", "final/val/acc": 0.10},  # block not drawn
    ])  # fmt: skip
    summary = summarize(trials, _plan(tmp_path))
    assert summary["by_param"]["mixing.block"] == {"cut": 0.90, "linear": 0.80}
    assert summary["by_param"]["model.n_members"] == {"2": 0.90, "3": 0.45}
    assert summary["best"]["run_id"] == "a"
    text = format_summary({**summary, "interrupted": False}, _plan(tmp_path))
    assert "found: mixing.block cut does best (mean val/acc: cut 0.9000, linear 0.8000)" in text


def test_the_resume_command_names_everything_the_search_was_started_with(tmp_path):
    plan = _plan(tmp_path)
    argv = shlex.split(resume_command(plan))
    for flag, value in (
        ("--name", "s1"),
        ("--storage", str(tmp_path / "runs")),
        ("--mlflow-uri", plan.mlflow_uri),
        ("--gpus", "0"),
        ("--cpus", "2"),
    ):
        assert argv[argv.index(flag) + 1] == value  # fmt: skip
    assert "--resume" in argv and argv[1:3] == ["-m", "mixmo_search.tune"]


def test_scripts_are_named_as_the_shell_will_find_them():
    python = script("python")
    assert python == "python" or Path(python).name == "python"
    assert Path(sys.executable).parent.joinpath("optuna-dashboard").exists()
