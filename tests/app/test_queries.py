from __future__ import annotations

import math

import numpy as np
import pytest

from app import queries
from mixmo_search import tracking
from mixmo_search.search.pareto import pareto_front
from mixmo_search.search.space import load_space

OBJECTIVES = ["val/acc", "val/disagreement"]  # tests/spaces/pareto_small.yaml


@pytest.fixture(scope="module")
def raw(search_store):
    client = tracking.connect(search_store.uri)
    exp_id = tracking.experiment_id(client, create=False)
    return exp_id, tracking.load_trials(client, exp_id, search_store.parent_run_id)


@pytest.fixture(scope="module")
def trials(search_store, raw):
    exp_id, _ = raw
    return queries.trials(search_store.uri, exp_id, search_store.parent_run_id)


def test_searches_lists_the_search_with_counts_and_best(search_store, raw):
    found = queries.searches(search_store.uri)
    row = found.set_index("run_id").loc[search_store.parent_run_id]
    assert row["search"] == search_store.name
    assert row["status"] == "FINISHED"
    assert row["trials/total"] == search_store.n_trials
    assert row["experiment_id"] == raw[0]
    assert row["best_metric"] == "val/acc"
    finished = raw[1][raw[1]["status"] == "finished"]
    if len(finished):
        assert row["best"] == pytest.approx(finished["final/val/acc"].max())
    label = queries.search_label(row)
    assert search_store.name in label and f"{search_store.n_trials} trials" in label


def test_trials_frame_has_every_trial_and_status(search_store, raw, trials):
    _, loaded = raw
    assert len(trials) == search_store.n_trials
    assert sorted(trials["run_id"]) == sorted(loaded["run_id"])
    assert set(trials["status"]) <= set(queries.STATUSES)
    parent = tracking.connect(search_store.uri).get_run(search_store.parent_run_id)
    for status in ("finished", "pruned", "failed"):
        assert (trials["status"] == status).sum() == parent.data.metrics[f"trials/{status}"]
    assert list(trials.columns[: len(queries.BASE_COLUMNS)]) == list(queries.BASE_COLUMNS)


def test_metrics_are_final_when_finished_and_last_epoch_otherwise(raw, trials):
    _, loaded = raw
    merged = trials.merge(loaded, on="run_id", suffixes=("", "_raw"))
    for row in merged.to_dict("records"):
        if row["status"] == "finished":
            assert row["has_final"]
            assert row["val/acc"] == row["final/val/acc"]
            assert row["test/acc"] == row["final/test/acc"]
        else:
            assert not row["has_final"]
            assert row["val/acc"] == row["val/acc_raw"] or math.isnan(row["val/acc_raw"])
            assert math.isnan(row["test/acc"])
    assert not any(c.startswith("final/") for c in trials.columns)


def test_searched_params_are_the_space_params(search_store, trials):
    space = load_space(search_store.space)
    assert queries.searched_params(trials) == sorted(f"param.{p.key}" for p in space.params)


def test_pareto_front_matches_pareto_front_and_the_search_tags(trials):
    front = queries.front_run_ids(trials, OBJECTIVES, ["max", "max"])
    finished = trials[trials["status"] == "finished"]
    expected = pareto_front(finished.to_dict("records"), OBJECTIVES, ["max", "max"])
    assert front == finished["run_id"].iloc[expected].tolist()
    assert sorted(front) == sorted(trials.loc[trials["pareto"], "run_id"])


def test_metric_names_and_modes(trials):
    metrics = queries.metric_columns(trials)
    assert metrics[0].startswith("val/") and {"val/acc", "train/loss"} <= set(metrics)
    assert "test/acc" in metrics and "test/acc" not in queries.epoch_metrics(trials)
    assert queries.metric_mode("val/nll", {}) == "min"
    assert queries.metric_mode("val/disagreement", {}) == "max"
    assert queries.metric_mode("val/acc_member1", {}) == "max"
    assert queries.metric_mode("val/acc", {"val/acc": "min"}) == "min"


def test_filters(trials):
    pruned = queries.filter_trials(trials, statuses=["pruned"])
    assert set(pruned["status"]) <= {"pruned"} and len(pruned) == (trials.status == "pruned").sum()
    assert queries.filter_options(trials, "param.model.n_members") == sorted(
        trials["param.model.n_members"].unique().tolist()
    )
    low, high = queries.filter_options(trials, "param.optim.lr")
    assert low == trials["param.optim.lr"].min() and high == trials["param.optim.lr"].max()
    block = trials["param.mixing.block"].iloc[0]
    kept = queries.filter_trials(
        trials,
        statuses=queries.STATUSES,
        choices={"param.mixing.block": [block]},
        ranges={"param.optim.lr": (low, high)},
    )
    assert len(kept) == (trials["param.mixing.block"] == block).sum()


def test_trials_table_links_each_run(raw, trials):
    exp_id, _ = raw
    params = queries.searched_params(trials)
    table = queries.trials_table(
        trials, params=params, metrics=["val/acc"], exp_id=exp_id, ui_base="http://mlflow:5000/"
    )
    assert list(table["trial_id"]) == list(trials["trial_id"])
    assert {"mixing.block", "model.n_members", "val/acc", "mlflow"} <= set(table.columns)
    run_id = trials["run_id"].iloc[0]
    assert table["mlflow"].iloc[0] == f"http://mlflow:5000/#/experiments/{exp_id}/runs/{run_id}"


def test_importance_needs_two_finished_trials_and_ranks_the_params(trials):
    params = queries.searched_params(trials)
    one = trials.assign(status=["finished"] + ["pruned"] * (len(trials) - 1))
    assert queries.param_importances(one, params, "val/acc", "max").empty
    # Every trial replayed as finished on its last reported value (4 params).
    everyone = trials.assign(status="finished")
    for evaluator in queries.EVALUATORS:
        scores = queries.param_importances(everyone, params, "val/acc", "max", evaluator=evaluator)
        assert set(scores["param"]) <= set(params) and len(scores) > 0
        assert scores["importance"].sum() == pytest.approx(1.0)


def test_comparison_frames(trials):
    run_ids = trials.loc[trials["val/acc"].notna(), "run_id"].tolist()[:3]
    names = trials.set_index("run_id").loc[run_ids, "trial_id"].tolist()
    differences = queries.param_differences(trials, run_ids)
    assert list(differences.columns) == names
    assert "mixing.p" in differences.index and "data.name" not in differences.index
    compared = queries.metric_comparison(trials, run_ids, ["val/acc", "val/nll"])
    assert compared.shape == (2, len(run_ids)) and compared.notna().all().all()
    members = queries.member_accuracies(trials, run_ids, "val")
    assert set(members["trial"]) == set(names)
    assert set(members["member"]) >= {"member0", "member1"}
    calibration = queries.calibration(trials, run_ids, "val")
    assert set(calibration["scaling"]) == {"before", "after"}
    assert set(calibration["metric"]) == {"nll", "ece"}


def test_histories_follow_the_epochs(search_store, trials):
    run_ids = tuple(trials["run_id"])
    history = queries.histories(search_store.uri, run_ids, ("val/acc",))
    assert set(history["run_id"]) == set(trials.loc[trials["val/acc"].notna(), "run_id"])
    for row in trials[trials["val/acc"].notna()].to_dict("records"):
        steps = history[history["run_id"] == row["run_id"]]
        assert steps["step"].tolist() == list(range(1, len(steps) + 1))
        if row["status"] != "finished":
            assert steps["value"].iloc[-1] == row["val/acc"]


def test_ensemble_of_stored_predictions_reproduces_the_logged_metrics(search_store, trials):
    finished = trials[trials["status"] == "finished"]
    assert len(finished) >= 1, "the fixture search should finish at least one trial"
    run_ids = tuple(finished["run_id"])
    table = queries.ensemble(search_store.uri, run_ids, tuple(finished["trial_id"]))
    assert list(table.index) == [*finished["trial_id"], "ensemble"]
    for row in finished.to_dict("records"):
        alone = table.loc[row["trial_id"]]
        assert alone["val/acc"] == pytest.approx(row["val/acc"], abs=1e-9)
        assert alone["test/acc"] == pytest.approx(row["test/acc"], abs=1e-9)
        assert alone["val/nll"] == pytest.approx(row["val/nll"], abs=2e-3)  # float16 logits
    path = queries.greedy(search_store.uri, run_ids, len(run_ids), "nll")
    assert path["size"].tolist() == list(range(1, len(run_ids) + 1))
    assert set(path["run_id"]) == set(run_ids)
    assert np.isfinite(path[["val/nll", "test/nll"]].to_numpy()).all()


def test_missing_predictions_are_a_tracking_error(running_store):
    uri, parent = running_store
    live = queries.trials(uri, queries.searches(uri)["experiment_id"].iloc[0], parent)
    with pytest.raises(
        tracking.TrackingError, match="has no readable artifact 'predictions/val.npz'"
    ):
        queries.predictions(uri, live["run_id"].iloc[0], "val")


def test_store_errors_say_what_to_do(tmp_path, unreachable_uri):
    with pytest.raises(tracking.TrackingError, match="run a search first"):
        queries.open_store(f"sqlite:///{tmp_path / 'nothing.db'}")
    assert not (tmp_path / "nothing.db").exists()
    with pytest.raises(tracking.TrackingError, match="cannot reach"):
        queries.open_store(unreachable_uri)


def test_empty_and_running_stores(empty_store, running_store):
    assert queries.searches(empty_store).empty
    uri, parent = running_store
    found = queries.searches(uri).set_index("run_id")
    assert found.loc[parent, "status"] == "RUNNING"
    assert "trials" not in queries.search_label(found.loc[parent])
    live = queries.trials(uri, found.loc[parent, "experiment_id"], parent)
    assert sorted(live["status"]) == ["pruned", "running"]
    assert queries.front_run_ids(live, OBJECTIVES, ["max", "max"]) == []
    assert "2 trials (1 pruned, 1 running)" in queries.search_details(found.loc[parent], live)
