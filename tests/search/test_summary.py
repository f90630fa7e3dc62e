"""summary: counts, best trial and findings from a trials frame; commands printed as pasted."""

from __future__ import annotations

import math
import shlex
import socket
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixmo_search.search.plan import make_plan
from mixmo_search.search.space import load_space
from mixmo_search.search.summary import (
    format_summary,
    free_port,
    resume_command,
    script,
    summarize,
)

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
        {"run_id": "d", "param.mixing.block": "cut", "param.model.n_members": 2,
         "param.searched": drawn, "final/val/acc": 0.92},
    ])  # fmt: skip
    summary = summarize(trials, _plan(tmp_path))
    block = summary["by_param"]["mixing.block"]
    assert block["drawn"] == 3  # trial c trained with the base `cut` but did not draw it
    assert block["values"]["cut"]["finished"] == 2
    assert block["values"]["cut"]["mean"] == pytest.approx(0.91)
    assert block["values"]["linear"]["finished"] == 1 and block["best"] is None
    members = summary["by_param"]["model.n_members"]
    assert members["values"]["3"]["mean"] == pytest.approx(0.45)
    assert summary["best"]["run_id"] == "d" and summary["best"]["params"]["mixing.block"] == "cut"
    text = format_summary({**summary, "interrupted": False}, _plan(tmp_path))
    assert "found: mixing.block (mean val/acc ± s.e. of finished trials, drawn in 3 of 4 " in text
    assert "cut: 0.9100 ± 0.0100 (2 finished); linear: 0.8000 (1 finished)" in text
    assert "too few finished trials to name a best value" in text


def test_a_value_none_of_whose_trials_finished_is_named(tmp_path):
    drawn = "['model.n_members']"
    trials = _trials([
        {"run_id": "a", "param.model.n_members": 2, "param.searched": drawn,
         "final/val/acc": 0.90},
        {"run_id": "b", "param.model.n_members": 2, "param.searched": drawn,
         "final/val/acc": 0.92},
        {"run_id": "c", "param.model.n_members": 3, "param.searched": drawn,
         "status": "pruned", "epochs": 6, "val/acc": 0.3},
        {"run_id": "d", "param.model.n_members": 3, "param.searched": drawn,
         "status": "pruned", "epochs": 6, "val/acc": 0.2},
    ])  # fmt: skip
    summary = summarize(trials, _plan(tmp_path))
    text = format_summary({**summary, "interrupted": False}, _plan(tmp_path))
    assert "3: all pruned at epoch 6 (2 trials)" in text
    assert summary["by_param"]["model.n_members"]["values"]["3"]["finished"] == 0


def _value_rows(values: dict[int, list[float]]) -> pd.DataFrame:
    drawn = "['model.n_members']"
    return _trials([
        {"run_id": f"{m}-{i}", "trial_id": f"{m}-{i}", "param.model.n_members": m,
         "param.searched": drawn,
         "final/val/acc": acc, "optuna_trial": float(10 * m + i)}
        for m, accs in values.items() for i, acc in enumerate(accs)
    ])  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    two=st.lists(st.floats(0.5, 1.0), min_size=1, max_size=5),
    three=st.lists(st.floats(0.5, 1.0), min_size=1, max_size=5),
)
def test_a_best_value_is_named_only_when_two_standard_errors_hold_it(tmp_path_factory, two, three):
    """The rule, on generated results: a value is called best only when it and the runner-up
    each have two or more finished trials and their means differ by more than twice the
    standard error of the difference; no line at all on one finished trial a value."""
    plan = _plan(tmp_path_factory.mktemp("plan"))
    summary = summarize(_value_rows({2: two, 3: three}), plan)
    finding = summary["by_param"].get("model.n_members")
    if len(two) == 1 and len(three) == 1:
        assert finding is None
        return
    named = finding["best"]
    groups = {"2": pd.Series(two), "3": pd.Series(three)}
    if min(len(two), len(three)) < 2:
        assert named is None
        return
    se = math.hypot(*(g.std() / math.sqrt(len(g)) for g in groups.values()))
    gap = abs(groups["2"].mean() - groups["3"].mean())
    if gap > 2 * se * (1 + 1e-9):
        assert named == max(groups, key=lambda v: groups[v].mean())
    elif gap < 2 * se * (1 - 1e-9):
        assert named is None


def test_ties_go_to_the_lowest_optuna_trial_number_whatever_the_rows_order(tmp_path):
    rows = _value_rows({1: [0.96, 0.96, 0.96], 2: [0.9]})
    for order in (rows, rows.iloc[::-1], rows.sample(frac=1, random_state=1)):
        summary = summarize(order, _plan(tmp_path))
        assert summary["best"]["optuna_trial"] == 10
        assert summary["tied_with"] == ["1-1", "1-2"]  # the other two, by number
    text = format_summary({**summary, "interrupted": False}, _plan(tmp_path))
    assert "tied on val/acc with 1-1, 1-2: the lowest Optuna trial number is named best" in text


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


def test_a_printed_port_is_the_default_when_free_else_another_free_one():
    """The `next:` servers' ports: a port nobody listens on is kept; one taken (a dashboard
    left open) gives way to a port that can be listened on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert free_port(port) == port
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        other = free_port(port)
        assert other != port
        with socket.socket() as server:
            server.bind(("127.0.0.1", other))
            server.listen()
