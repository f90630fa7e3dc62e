"""trial_table: the rules of the one trial record, each checked against its source (Optuna's
own best trial and Pareto front, the outcome rule), over generated searches."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixmo_search import trial_table
from mixmo_search.search.outcomes import Outcome
from mixmo_search.tracking import TERMINAL_MLFLOW

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_statuses_are_the_outcome_rules_and_running():
    assert set(trial_table.STATUSES) == {o.value for o in Outcome} | {"running"}
    assert set(trial_table.STATUSES) == set(TERMINAL_MLFLOW) | {"running"}


@given(
    drawn=st.lists(
        st.tuples(st.booleans(), st.sampled_from(["cut", "linear"]), st.integers(1, 3)),
        min_size=1, max_size=12,
    )
)  # fmt: skip
def test_a_param_is_missing_exactly_where_the_trial_did_not_draw_it(drawn):
    """Rows carry the trained config (the base value `cut` where the block was not drawn);
    the record keeps a value only where the trial's `searched` names the key (a key some
    trial of the search drew)."""
    drawn = [*drawn, (True, "linear", 2)]
    frame = pd.DataFrame(
        [
            {"run_id": str(i), "param.mixing.block": block if has else "cut",
             "param.model.n_members": members,
             "param.searched": repr(sorted(["model.n_members"] + ["mixing.block"] * has))}
            for i, (has, block, members) in enumerate(drawn)
        ]
    )  # fmt: skip
    masked = trial_table._without_undrawn(frame.copy())
    for (has, block, members), row in zip(drawn, masked.to_dict("records"), strict=True):
        assert (
            (row["param.mixing.block"] == block) if has else math.isnan(row["param.mixing.block"])
        )
        assert row["param.model.n_members"] == members  # drawn everywhere: untouched
        assert trial_table.drawn_params(row) == {
            "model.n_members": members, **({"mixing.block": block} if has else {})
        }  # fmt: skip


def test_searched_keys_read_the_logged_list_and_nothing_else():
    assert trial_table.searched_keys("['a.b', 'c.d']") == ["a.b", "c.d"]
    for broken in (None, math.nan, "", "not a list", "{'a': 1}", "__import__('os')"):
        assert trial_table.searched_keys(broken) == []


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.5, 0.9, 0.96, 0.98]), min_size=1, max_size=8),
    told=st.randoms(use_true_random=False),
    mode=st.sampled_from(["max", "min"]),
)
def test_the_best_trial_is_the_one_optunas_sqlite_study_names(
    tmp_path_factory, values, told, mode
):
    """Trials told in any order, with ties: `best_trial` names Optuna's `best_trial` of the
    same values in a SQLite study (what optuna-dashboard shows)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('study') / 'optuna.db'}"
    study = optuna.create_study(storage=url, direction="maximize" if mode == "max" else "minimize")
    numbers = [study.ask().number for _ in values]
    order = list(range(len(values)))
    told.shuffle(order)
    for i in order:
        study.tell(numbers[i], values[i])
    rows = [{"run_id": f"r{i}", "trial_id": f"{(7 * i) % 11:08x}", "status": "finished",
             "optuna_trial": float(n), "val/acc": v}
            for i, (n, v) in enumerate(zip(numbers, values, strict=True))]  # fmt: skip
    frame = pd.DataFrame([rows[i] for i in order])  # the record's order: any
    best = trial_table.best_trial(frame, "val/acc", mode)
    assert int(best["optuna_trial"]) == study.best_trial.number


@settings(max_examples=40, deadline=None)
@given(
    points=st.lists(
        st.tuples(st.sampled_from([0.8, 0.88, 0.9, 0.96]), st.sampled_from([0.0, 0.2, 0.3])),
        min_size=1, max_size=10,
    ),
    pruned=st.lists(st.booleans(), min_size=10, max_size=10),
)  # fmt: skip
def test_the_pareto_set_is_optunas_front_of_the_finished_trials(points, pruned):
    frame = pd.DataFrame(
        [{"run_id": f"r{i}", "status": "pruned" if pruned[i] else "finished", "val/acc": a,
          "val/disagreement": d} for i, (a, d) in enumerate(points)]
    )  # fmt: skip
    axes = trial_table.pareto_axes({"val/acc": "max"})
    assert axes == {"val/acc": "max", "val/disagreement": "max"}
    oracle = optuna.create_study(directions=["maximize", "maximize"])
    for row in frame[frame["status"] == "finished"].to_dict("records"):
        trial = oracle.ask()
        trial.set_user_attr("run_id", row["run_id"])
        oracle.tell(trial, [row["val/acc"], row["val/disagreement"]])
    expected = {t.user_attrs["run_id"] for t in oracle.best_trials}
    assert set(trial_table.pareto_run_ids(frame, axes)) == expected


@pytest.mark.parametrize(
    ("objectives", "axes"),
    [
        ({"val/nll": "min"}, {"val/nll": "min", "val/disagreement": "max"}),
        ({"val/disagreement": "max"}, {"val/disagreement": "max", "val/acc": "max"}),
        ({"val/acc": "max", "cost/flops": "min"}, {"val/acc": "max", "cost/flops": "min"}),
        ({}, {"val/acc": "max", "val/disagreement": "max"}),
    ],
)
def test_pareto_axes_are_the_objectives_or_the_objective_beside_diversity(objectives, axes):
    assert trial_table.pareto_axes(objectives) == axes
