from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from app import ensembles, parameters, queries
from mixmo_search import tracking, trial_table
from mixmo_search.ensembles import ensemble_cost, evaluate_ensemble
from mixmo_search.pareto import pareto_front
from mixmo_search.search.space import load_space

OBJECTIVES = ["val/acc", "val/disagreement"]  # tests/spaces/pareto_small.yaml


@pytest.fixture(scope="module")
def raw(search_store):
    client = tracking.connect(search_store.uri)
    exp_id = tracking.experiment_id(client, create=False)
    return exp_id, trial_table.load_trials(client, exp_id, search_store.parent_run_id)


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
    for better_high in ("val/corrupt_acc", "val/corrupt_rel_acc", "val/cov_at_5risk",
                        "test/ood_auroc_mi", "val/ood_aupr_out_msp"):  # fmt: skip
        assert queries.metric_mode(better_high, {}) == "max", better_high
    for better_low in ("val/aurc", "val/augrc", "val/aece", "val/ood_fpr95_msp",
                       "val/corrupt_nll", "val/risk_at_80cov"):  # fmt: skip
        assert queries.metric_mode(better_low, {}) == "min", better_low


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


def test_importance_is_refused_below_the_minimum_and_ranks_the_params(search_store, trials):
    params = queries.searched_params(trials)
    too_few = trials.assign(status=["finished"] * 4 + ["pruned"] * (len(trials) - 4))
    refusal = parameters.importance_refusal(too_few, params, "val/acc")
    assert "at least 5 finished trials with val/acc; this search has 4" in refusal
    assert "Include the trials stopped early" in refusal
    assert parameters.param_importances(too_few, params, "val/acc", "max").scores.empty
    # the user's choice: the trials stopped early enter with their last epoch's value
    assert parameters.importance_refusal(too_few, params, "val/acc", include_pruned=True) is None
    declared = parameters.space_params(search_store.uri, search_store.parent_run_id)
    scales = parameters.param_scales(trials, params, declared)
    study = (str(search_store.storage / search_store.name), search_store.name)
    for evaluator in parameters.EVALUATORS:
        for source in (study, None):  # the search's own study, and the record alone
            found = parameters.param_importances(
                too_few, params, "val/acc", "max", evaluator=evaluator, include_pruned=True,
                scales=scales, study=source,
            )  # fmt: skip
            scores = found.scores
            assert set(scores["param"]) <= set(params) and len(scores) > 0
            assert scores["importance"].sum() == pytest.approx(1.0)
            assert found.trials == len(too_few)
            assert found.source == ("the search's Optuna study" if source else "the trial record")
    constant = too_few.assign(**{p: too_few[p].iloc[0] for p in params})
    assert "No searched parameter varies" in parameters.importance_refusal(
        constant, params, "val/acc", include_pruned=True
    )


def test_param_scales_follow_the_space(search_store, trials):
    """pareto_small.yaml: p uniform, block categorical, M an int of 2 values, lr loguniform."""
    declared = parameters.space_params(search_store.uri, search_store.parent_run_id)
    assert declared["optim.lr"]["type"] == "loguniform"
    scales = parameters.param_scales(trials, queries.searched_params(trials), declared)
    assert scales == {
        "param.mixing.block": "categorical",
        "param.mixing.p": "linear",
        "param.model.n_members": "categorical",
        "param.optim.lr": "log",
    }
    # without a space file: from the values alone (lr spans less than 2 decades here)
    guessed = parameters.param_scales(trials, queries.searched_params(trials), {})
    assert guessed["param.model.n_members"] == "categorical"
    assert guessed["param.mixing.block"] == "categorical"
    wide = trials.assign(**{"param.optim.lr": [10.0**-k for k in range(len(trials))]})
    assert parameters.param_scales(wide, ["param.optim.lr"], {})["param.optim.lr"] == "log"
    assert queries.filter_options(trials, "param.model.n_members", "categorical") == [2, 3]


def test_sql_reader_matches_search_runs(search_store, raw):
    """The SQL reader of SQLite stores gives MLflow's own search_runs frame, value for value."""
    exp_id, loaded = raw
    client = tracking.connect(search_store.uri)
    assert search_store.uri.startswith("sqlite:")  # so load_trials took the SQL path
    api = trial_table._load_trials_api(client, exp_id, search_store.parent_run_id)
    assert list(loaded["run_id"]) == list(api["run_id"])  # newest first, as search_runs
    columns = sorted(api.columns)
    assert sorted(loaded.columns) == columns
    pd.testing.assert_frame_equal(loaded[columns], api[columns])


def test_epochs_and_the_objective_order(search_store, trials):
    epochs = load_space(search_store.space).base_config().optim.epochs
    finished = trials[trials["status"] == "finished"]
    assert (finished["epochs"] == epochs).all()
    pruned = trials[trials["status"] == "pruned"]
    assert (pruned["epochs"] < epochs).all()
    ordered = queries.by_objective(trials, "val/acc", "max")
    values = ordered["val/acc"].dropna().tolist()
    assert values == sorted(values, reverse=True)
    present = ordered["val/acc"].notna().tolist()
    assert present == sorted(present, reverse=True)  # trials without the metric come last
    lowest_first = queries.by_objective(trials, "val/nll", "min")["val/nll"].dropna()
    assert lowest_first.is_monotonic_increasing


def test_optuna_numbers_match_the_study(search_store, trials):
    """Each trial's `mixmo.optuna_trial` tag names the Optuna trial that drew its params."""
    import optuna

    row = queries.searches(search_store.uri).set_index("run_id").loc[search_store.parent_run_id]
    assert row["storage"] == str(search_store.storage / search_store.name)
    study = optuna.load_study(
        study_name=search_store.name, storage=f"sqlite:///{Path(row['storage']) / 'optuna.db'}"
    )
    drawn = {t.number: t.params for t in study.trials}
    assert sorted(trials["optuna_trial"].astype(int)) == sorted(drawn)  # one each
    for trial in trials.to_dict("records"):
        params = drawn[int(trial["optuna_trial"])]
        assert params == {k: trial[f"param.{k}"] for k in params}
    table = queries.trials_table(trials, params=[], metrics=[], exp_id="0", ui_base="http://x")
    assert list(table.columns[:4]) == ["trial_id", "mlflow", "optuna_trial", "status"]


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
    for row in finished.to_dict("records"):
        alone = ensembles.combined(search_store.uri, (row["run_id"],))
        for split in ("val", "test"):
            # The trainer scored float32 logits; the file stores float16, whose rounding can
            # flip the argmax of a near-tie: allow one sample of the split, no more. (So the
            # pages show a trial's logged metrics, and compute only the ensembles.)
            n_samples = len(ensembles.predictions(search_store.uri, row["run_id"], split).labels)
            assert alone[f"{split}/acc"] == pytest.approx(
                row[f"{split}/acc"], abs=1.01 / n_samples
            )
        assert alone["val/nll"] == pytest.approx(row["val/nll"], abs=2e-3)  # float16 logits
    result = ensembles.greedy(search_store.uri, run_ids, tuple(finished["trial_id"]), 10, "nll")
    path = result.path
    assert path["size"].tolist() == list(range(1, len(path) + 1))
    assert set(path["run_id"]) <= set(run_ids)
    assert path["val/nll"].is_monotonic_decreasing  # no addition that worsens validation NLL
    assert np.isfinite(path[["val/nll", "test/nll"]].to_numpy()).all()
    assert result.reason


def test_missing_predictions_are_a_tracking_error(running_store):
    uri, parent = running_store
    live = queries.trials(uri, queries.searches(uri)["experiment_id"].iloc[0], parent)
    with pytest.raises(
        tracking.TrackingError, match="has no readable artifact 'predictions/val.npz'"
    ):
        ensembles.predictions(uri, live["run_id"].iloc[0], "val")


def test_store_errors_say_what_to_do(tmp_path, unreachable_uri):
    with pytest.raises(tracking.TrackingError, match="run a search first"):
        tracking.connect(create=False, uri=f"sqlite:///{tmp_path / 'nothing.db'}")
    assert not (tmp_path / "nothing.db").exists()
    with pytest.raises(tracking.TrackingError, match="cannot reach"):
        tracking.connect(create=False, uri=unreachable_uri)


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


@pytest.mark.parametrize(
    ("value", "reference", "mode", "text", "colour"),
    [
        (0.95, 0.95, "max", "±0.0000", "off"),
        (0.95004, 0.95, "max", "±0.0000", "off"),  # shown to 4 decimals: no change
        (0.96, 0.95, "max", "+0.0100", "green"),
        (0.94, 0.95, "max", "-0.0100", "red"),
        (0.30, 0.32, "min", "-0.0200", "green"),
        (0.33, 0.32, "min", "+0.0100", "red"),
    ],
)
def test_deltas_are_coloured_by_what_is_better(value, reference, mode, text, colour):
    shown = ensembles.delta(value, reference, mode)
    assert shown["delta"] == text and shown["delta_color"] == colour
    assert (shown.get("delta_arrow") == "off") == (colour == "off")


@pytest.fixture(scope="module")
def mixed(ensemble_store):
    client = tracking.connect(ensemble_store.uri)
    exp_id = tracking.experiment_id(client, create=False)
    return queries.trials(ensemble_store.uri, exp_id, ensemble_store.parent_run_id)


def test_finished_trials_log_their_inference_cost(mixed):
    assert (mixed["status"] == "finished").all()
    costed = ensembles.costed(mixed)
    assert len(costed) == len(mixed) == 6
    assert (costed[list(ensembles.COSTS)] > 0).all().all()
    by_m = costed.groupby("param.model.n_members")
    params, flops = by_m["cost/params"].unique(), by_m["cost/flops"].unique()
    assert all(len(v) == 1 for v in [*params, *flops])  # a function of the config only
    # M = 2 shares the core's forward: a few hundred FLOPs more (one head), not twice as many
    assert 1 < flops[2][0] / flops[1][0] < 1.01 and params[2][0] > params[1][0]


def test_deep_ensembles_of_the_best_vanilla_trials(ensemble_store, mixed):
    ranked = ensembles.vanilla_ranking(mixed, "val/acc", "max")
    vanilla = mixed[mixed["param.model.n_members"] == 1]
    assert sorted(ranked) == sorted(vanilla["run_id"])
    accs = vanilla.set_index("run_id").loc[ranked, "val/acc"].tolist()
    assert accs == sorted(accs, reverse=True)
    names = dict(zip(mixed["run_id"], mixed["trial_id"], strict=True))
    costs = ensembles.costs_of(mixed, ranked)
    table = ensembles.deep_ensembles(
        ensemble_store.uri, tuple(ranked), tuple(names[r] for r in ranked), costs
    )
    assert table["k"].tolist() == [2, 3]  # three vanilla trials
    for row in table.to_dict("records"):
        members = ranked[: row["k"]]
        val = [ensembles.predictions(ensemble_store.uri, r, "val") for r in members]
        test = [ensembles.predictions(ensemble_store.uri, r, "test") for r in members]
        assert row["val/acc"] == pytest.approx(evaluate_ensemble(val, test)["val/acc"])
        summed = ensemble_cost(
            [dict(zip(ensembles.COSTS, c, strict=True)) for c in costs[: row["k"]]]
        )
        assert (
            row["cost/flops"]
            == summed["cost/flops"]
            == pytest.approx(vanilla.set_index("run_id").loc[members, "cost/flops"].sum())
        )
        assert row["members"] == ", ".join(names[r] for r in members)


def test_shifted_deep_ensembles_follow_from_the_stored_predictions(ensemble_store, mixed):
    """The Robustness and OOD pages' baselines: k vanilla trials' stored corrupted and OOD
    logits, averaged, give their corrupted accuracy and detection metrics; one trial alone
    gives back what it logged."""
    from app import shifts
    from mixmo_search.uncertainty import ood_metrics

    ranked = ensembles.vanilla_ranking(mixed, "val/corrupt_acc", "max")
    names = dict(zip(mixed["run_id"], mixed["trial_id"], strict=True))
    labels = tuple(names[r] for r in ranked)
    costs = ensembles.costs_of(mixed, ranked)
    corrupted = shifts.deep_ensembles_corrupted(ensemble_store.uri, tuple(ranked), labels, costs)
    assert corrupted["k"].tolist() == [2, 3]
    by_run = mixed.set_index("run_id")
    for split in ("val", "test"):
        alone = shifts._ensemble_corrupt_acc(ensemble_store.uri, (ranked[0],), split)
        assert alone == pytest.approx(by_run.at[ranked[0], f"{split}/corrupt_acc"], abs=5e-3)
    detected = shifts.deep_ensembles_ood(ensemble_store.uri, tuple(ranked), labels, costs, "mi")
    clean = [ensembles.predictions(ensemble_store.uri, r, "val") for r in ranked[:2]]
    ood = [ensembles.predictions(ensemble_store.uri, r, "val_ood") for r in ranked[:2]]
    heads = [torch.from_numpy(np.concatenate([p.member_logits for p in preds]).astype(np.float32))
             for preds in (clean, ood)]  # fmt: skip
    assert detected.iloc[0]["val/ood_auroc_mi"] == pytest.approx(
        ood_metrics(*heads)["ood_auroc_mi"]
    )
    rows = shifts.severity_rows(ensemble_store.uri, ranked[:1], labels[:1], "test")
    assert len(rows) == 5 * 6 and set(rows["severity"]) == {0, 1, 2, 3, 4, 5}


def test_published_uncertainty_figures_sit_beside_the_matching_preset(mixed):
    table = queries.reference_table("cifar100_vanilla", mixed)
    assert table["method"].tolist()[:2] == ["Deterministic", "Ensemble (size 4)"]
    assert table.iloc[0]["test/corrupt_acc"] == pytest.approx(0.5137)
    assert table.iloc[1]["test/acc"] == pytest.approx(0.827)
    assert table.iloc[-1]["method"].startswith("this search: trial ")
    assert queries.reference_table("digits_quick", mixed).empty
    note = queries.reference_note("cifar10_mimo", "test/corrupt_acc")
    assert "MIMO 76.60%" in note and "uncertainty-baselines" in note
    assert queries.reference_note("cifar100_cut_mixmo", "test/corrupt_acc") is None


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("val/acc", 0.98, "0.9800"),
        ("test/ece", 0.10456, "0.1046"),
        ("best_epoch", 10.0, "10"),
        ("epochs", 6.0, "6"),
        ("optuna_trial", 7.0, "7"),
        ("size", 3, "3"),
        ("cost/params", 36_512_000.0, "36.5M"),
        ("cost/flops", 10.5e9, "10.5G"),
        ("cost/images_per_s", 2345.6, "2346"),
        ("val/acc", float("nan"), queries.NOT_DRAWN),
    ],
)
def test_numbers_show_as_what_they_count(name, value, shown):
    assert queries.shown_number(name, value) == shown


def test_a_param_not_drawn_is_its_own_filter_value():
    frame = pd.DataFrame(
        {"status": ["finished"] * 3, "param.mixing.block": ["cut", None, "linear"],
         "param.mixing.p": [0.5, None, 0.7]}
    )  # fmt: skip
    assert queries.filter_options(frame, "param.mixing.block") == ["cut", "linear", "—"]
    kept = queries.filter_trials(frame, statuses=["finished"],
                                 choices={"param.mixing.block": ["cut", "—"]})  # fmt: skip
    assert kept.index.tolist() == [0, 1]
    ranged = queries.filter_trials(frame, statuses=["finished"],
                                   ranges={"param.mixing.p": (0.6, 0.8)})  # fmt: skip
    assert ranged.index.tolist() == [1, 2]  # a trial without the param is not filtered by it
    differences = queries.param_differences(
        frame.assign(run_id=list("abc"), trial_id=list("abc")), list("abc")
    )
    assert differences.loc["mixing.block"].tolist() == ["cut", queries.NOT_DRAWN, "linear"]


def test_the_greedy_metrics_are_the_ensembles_module_ones():
    from mixmo_search.ensembles import GREEDY_METRICS

    assert ensembles.GREEDY_METRICS == tuple(GREEDY_METRICS)
