"""One truth: on a real search whose space has a conditional param (the mixing block, drawn
only for M >= 2), a tie (three M = 1 trials) and an all-pruned value (M = 3), the summary,
summary.json, the dashboard's frames (AppTest), the MLflow params and tags, promotion and the
Optuna study agree on every trial's params, outcome, best trial and Pareto set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from streamlit.testing.v1 import AppTest

from mixmo_search import tracking, trial_table
from mixmo_search.config import coerce_value
from mixmo_search.promote import plan_promotion

DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard.py"
OUTCOME_STATES = {"finished": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
                  "failed": TrialState.FAIL}  # fmt: skip
CONDITIONAL = "mixing.block"  # drawn only when model.n_members is 2 or 3


@pytest.fixture(scope="module")
def truth(truth_store, tmp_path_factory):
    """Every view's account of the search, read once."""
    client = tracking.connect(truth_store.uri, create=False)
    exp_id = tracking.experiment_id(client, create=False)
    record = trial_table.trial_record(client, exp_id, truth_store.parent_run_id)
    runs = {r: client.get_run(r).data for r in record["run_id"]}
    folder = tmp_path_factory.mktemp("summary")
    path = client.download_artifacts(truth_store.parent_run_id, "summary.json", str(folder))
    study = optuna.load_study(study_name=truth_store.name, storage=truth_store.study_url)
    return {
        "client": client,
        "record": record,
        "by_number": record.set_index(record["optuna_trial"].astype(int)),
        "runs": runs,
        "summary": json.loads(Path(path).read_text()),
        "study": study,
        "trials": {t.number: t for t in study.get_trials()},
    }


def open_page(monkeypatch, uri: str, page: str, selection: dict | None = None) -> AppTest:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    app = AppTest.from_file(str(DASHBOARD), default_timeout=120)
    for search_id, run_ids in (selection or {}).items():
        app.session_state[f"selected-{search_id}"] = run_ids
    app.run()
    if page != "views/trials.py":
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def values(data: list | dict) -> list:
    """A trace's x or y as a list: plotly writes numeric arrays as typed base64 blocks."""
    if isinstance(data, list):
        return data
    import base64

    import numpy as np

    return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()


def optuna_pareto(truth, axes: dict[str, str]) -> set[int]:
    """Optuna's own Pareto front (`best_trials`) of the finished trials on `axes`, the
    trainer's logged values: an oracle independent of `mixmo_search.pareto`."""
    finished = truth["record"][truth["record"]["status"] == "finished"]
    oracle = optuna.create_study(
        directions=["maximize" if mode == "max" else "minimize" for mode in axes.values()]
    )
    for row in finished.to_dict("records"):
        oracle.enqueue_trial({}, user_attrs={"number": int(row["optuna_trial"])})
        trial = oracle.ask()
        oracle.tell(trial, [row[m] for m in axes])
    return {t.user_attrs["number"] for t in oracle.best_trials}


def test_the_search_has_a_conditional_param_a_tie_and_an_all_pruned_value(truth):
    trials = truth["trials"]
    members = {n: t.params["model.n_members"] for n, t in trials.items()}
    assert {CONDITIONAL in t.params for t in trials.values()} == {True, False}
    assert all((CONDITIONAL in t.params) == (members[n] >= 2) for n, t in trials.items())
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    best = max(t.value for t in complete)
    assert sum(t.value == best for t in complete) >= 2, "no tie on the best value"
    three = [t for t in trials.values() if members[t.number] == 3]
    assert three and all(t.state == TrialState.PRUNED for t in three)


def test_every_trial_has_the_params_it_drew_in_every_view(truth):
    for number, trial in truth["trials"].items():
        row = truth["by_number"].loc[number]
        drawn = trial_table.drawn_params(row.to_dict())
        assert drawn == trial.params, number  # the record holds what Optuna drew, no more
        params = truth["runs"][row["run_id"]].params
        assert trial_table.searched_keys(params["searched"]) == sorted(trial.params)
        for key, value in trial.params.items():  # MLflow: the config as trained
            assert coerce_value(key, params[key]) == coerce_value(key, value)
        if CONDITIONAL not in trial.params:  # the base value it trained with: never shown
            assert params[CONDITIONAL] and math.isnan(row[f"param.{CONDITIONAL}"])
    summary = truth["summary"]
    for entry in [summary["best"], *summary["pareto"]]:
        assert entry["params"] == truth["trials"][entry["optuna_trial"]].params


def test_every_trial_has_one_outcome_in_every_view(truth, truth_store, monkeypatch):
    record = truth["record"]
    for number, trial in truth["trials"].items():
        row = truth["by_number"].loc[number]
        tag = truth["runs"][row["run_id"]].tags[tracking.STATUS]
        assert row["status"] == tag and OUTCOME_STATES[tag] == trial.state, number
    counts = truth["summary"]["counts"]
    assert {s: counts[s] for s in trial_table.STATUSES} == {
        s: int((record["status"] == s).sum()) for s in trial_table.STATUSES
    }
    app = open_page(monkeypatch, truth_store.uri, "views/trials.py")
    table = app.dataframe[0].value.set_index("trial_id")
    for row in record.to_dict("records"):
        shown = table.loc[row["trial_id"]]
        assert shown["status"] == row["status"]
        assert shown["optuna_trial"] == row["optuna_trial"]
        block = shown[CONDITIONAL]
        assert (block == row[f"param.{CONDITIONAL}"]) or (block is None or block != block)


def test_one_best_trial_in_every_view(truth, truth_store, monkeypatch):
    best = truth["study"].best_trial.number  # what optuna-dashboard shows
    row = truth["by_number"].loc[best]
    summary = truth["summary"]
    assert summary["best"]["optuna_trial"] == best
    assert summary["tied_with"], "the fixture's best value is tied"
    assert trial_table.best_trial(truth["record"], "val/acc", "max")["optuna_trial"] == best
    parent = truth["client"].get_run(truth_store.parent_run_id).data
    assert parent.tags[tracking.BEST_TRIAL] == row["trial_id"]
    assert f"  {row['trial_id']} (Optuna #{best}): val/acc" in truth_store.stdout
    assert "tied on val/acc with" in truth_store.stdout
    plan = plan_promotion(truth_store.name, tracking_uri=truth_store.uri)
    assert plan.trial.trial_id == row["trial_id"]
    app = open_page(monkeypatch, truth_store.uri, "views/trials.py")
    assert app.dataframe[0].value["trial_id"].iloc[0] == row["trial_id"]
    assert truth["study"].metric_names == ["val/acc"]  # optuna-dashboard names the objective


def test_one_pareto_set_in_every_view(truth, truth_store, monkeypatch):
    axes = truth["summary"]["pareto_on"]
    assert axes == {"val/acc": "max", "val/disagreement": "max"}  # beside the one objective
    expected = optuna_pareto(truth, axes)
    numbers = truth["by_number"]
    assert {e["optuna_trial"] for e in truth["summary"]["pareto"]} == expected
    tagged = {n for n, row in numbers.iterrows()
              if truth["runs"][row["run_id"]].tags.get(tracking.PARETO) == "true"}  # fmt: skip
    assert tagged == expected
    app = open_page(monkeypatch, truth_store.uri, "views/trials.py")
    table = app.dataframe[0].value
    assert set(table.loc[table["pareto"], "optuna_trial"].astype(int)) == expected
    app = open_page(monkeypatch, truth_store.uri, "views/tradeoff.py")
    (spec,) = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    layout = spec["layout"]
    assert (layout["xaxis"]["title"]["text"], layout["yaxis"]["title"]["text"]) == (
        "val/disagreement", "val/acc",
    )  # fmt: skip
    (front,) = [t for t in spec["data"] if t.get("name") == "Pareto front"]
    finished = numbers.loc[sorted(expected)]
    assert sorted(values(front["y"])) == pytest.approx(sorted(finished["val/acc"]))
    assert sorted(values(front["x"])) == pytest.approx(sorted(finished["val/disagreement"]))
    knee = plan_promotion(truth_store.name, policy="pareto-knee", tracking_uri=truth_store.uri)
    chosen = truth["record"].set_index("trial_id").loc[knee.trial.trial_id, "optuna_trial"]
    assert int(chosen) in expected


def test_findings_count_the_finished_trials_and_name_the_values_with_none(truth, truth_store):
    finding = truth["summary"]["by_param"]["model.n_members"]
    trials = list(truth["trials"].values())
    for value, found in finding["values"].items():
        drew = [t for t in trials if t.params["model.n_members"] == int(value)]
        assert found["trials"] == len(drew)
        assert found["finished"] == sum(t.state == TrialState.COMPLETE for t in drew)
    assert finding["values"]["3"]["finished"] == 0 and finding["best"] is None
    line = next(x for x in truth_store.stdout.splitlines() if x.startswith("found: model.n_m"))
    assert "3: all pruned at epoch 2" in line
    assert f"({finding['values']['1']['finished']} finished)" in line
    block = truth["summary"]["by_param"][CONDITIONAL]
    assert block["drawn"] == sum(CONDITIONAL in t.params for t in trials)  # not the M = 1 ones


def test_trials_compare_and_ensembles_show_one_value_per_metric(truth, truth_store, monkeypatch):
    record = truth["record"]
    finished = record[record["status"] == "finished"]
    picked = finished["run_id"].tolist()[:3]
    selection = {truth_store.parent_run_id: picked}
    compare = open_page(monkeypatch, truth_store.uri, "views/compare.py", selection)
    differences, metrics = (frame.value for frame in compare.dataframe)
    ensembles = open_page(monkeypatch, truth_store.uri, "views/ensembles.py", selection)
    table = ensembles.dataframe[0].value
    for row in finished[finished["run_id"].isin(picked)].to_dict("records"):
        assert metrics.loc["val/ece", row["trial_id"]] == f"{row['val/ece']:.4f}"
        assert metrics.loc["best_epoch", row["trial_id"]] == str(int(row["best_epoch"]))
        assert table.loc[row["trial_id"], "val/ece"] == row["val/ece"]  # logged, not recomputed
        if math.isnan(row[f"param.{CONDITIONAL}"]) and CONDITIONAL in differences.index:
            assert differences.loc[CONDITIONAL, row["trial_id"]] == trial_table.NOT_DRAWN
    assert "ensemble" in table.index
