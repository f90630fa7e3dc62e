"""Every page of the dashboard, run by Streamlit's AppTest against real stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mixmo_search import tracking, trial_table
from mixmo_search.promote import plan_promotion
from tests.waiting import scaled

DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard.py"
PAGES = [
    "views/trials.py",
    "views/tradeoff.py",
    "views/cost.py",
    "views/parameters.py",
    "views/compare.py",
    "views/ensembles.py",
    "views/promote.py",
    "views/robustness.py",
    "views/ood.py",
]
TIMEOUT_S = 120  # the ensembles page imports torch on its first run


def open_app(
    monkeypatch, uri: str, page: str | None = None, selection: dict[str, list[str]] | None = None
) -> AppTest:
    """Run the dashboard on `uri`, on `page`, with {search run id: selected run ids}."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    app = AppTest.from_file(str(DASHBOARD), default_timeout=scaled(TIMEOUT_S))
    for search_id, run_ids in (selection or {}).items():
        app.session_state[f"selected-{search_id}"] = run_ids
    app.run()
    if page is not None:
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def texts(app: AppTest) -> str:
    kinds = ("error", "warning", "info", "success", "caption")
    return " ".join(str(e.value) for kind in kinds for e in app.get(kind))


def plotly_specs(app: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def values(data: list | dict) -> list:
    """A trace's x or y as a list: plotly writes numeric arrays as typed base64 blocks."""
    if isinstance(data, list):
        return data
    import base64

    import numpy as np

    return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()


@pytest.fixture(scope="module")
def trials(search_store):
    client = tracking.connect(search_store.uri)
    exp_id = tracking.experiment_id(client, create=False)
    return trial_table.load_trials(client, exp_id, search_store.parent_run_id)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_the_search(monkeypatch, search_store, trials, page):
    selection = {search_store.parent_run_id: trials["run_id"].tolist()}
    app = open_app(monkeypatch, search_store.uri, page, selection)
    picker = app.sidebar.selectbox(key="search_id")
    assert picker.value == search_store.parent_run_id
    assert search_store.name in picker.format_func(picker.value)
    assert app.sidebar.multiselect(key=f"selected-{search_store.parent_run_id}").value == list(
        trials["run_id"]
    )
    assert not app.error, [e.value for e in app.error]


def test_trials_page_shows_the_five_trials_and_their_links(monkeypatch, search_store, trials):
    app = open_app(monkeypatch, search_store.uri)
    table = app.dataframe[0].value
    assert sorted(table["trial_id"]) == sorted(trials["trial_id"])
    assert table.set_index("trial_id")["status"].to_dict() == dict(
        zip(trials["trial_id"], trials["status"], strict=True)
    )
    assert all(f"/runs/{r}" in " ".join(table["mlflow"]) for r in trials["run_id"])
    assert {m.label: int(m.value) for m in app.metric}["trials"] == search_store.n_trials
    accs = table["val/acc"].dropna().tolist()
    assert accs == sorted(accs, reverse=True)  # the objective's order, best first
    by_trial = trials.set_index("trial_id")
    assert all(
        row["epochs"] == by_trial.loc[row["trial_id"], "epochs"]
        for row in table.to_dict("records")
    )
    assert list(table.columns[:4]) == ["trial_id", "mlflow", "optuna_trial", "status"]
    assert table["optuna_trial"].notna().all()  # matched in the search's optuna.db
    status = app.multiselect(key=f"{search_store.parent_run_id}-status")
    status.set_value(["finished"]).run()
    shown = app.dataframe[0].value
    assert set(shown["status"]) == {"finished"}
    assert len(shown) == (trials["status"] == "finished").sum()


def test_tradeoff_page_plots_every_trial(monkeypatch, search_store, trials):
    app = open_app(monkeypatch, search_store.uri, "views/tradeoff.py")
    (spec,) = plotly_specs(app)
    points = [
        p[0]
        for trace in spec["data"]
        if trace.get("name") != "selected"
        for p in trace.get("customdata", [])
    ]
    scored = trials[trials["val/acc"].notna() & trials["val/disagreement"].notna()]
    assert sorted(points) == sorted(scored["run_id"])
    assert "Pareto front" in [trace.get("name") for trace in spec["data"]]
    assert spec["layout"]["xaxis"]["title"]["text"] == "val/disagreement"
    app.selectbox(key=f"{search_store.parent_run_id}-x").set_value("val/nll").run()
    assert plotly_specs(app)[0]["layout"]["xaxis"]["title"]["text"] == "val/nll"


def test_parameters_page(monkeypatch, search_store, trials):
    app = open_app(monkeypatch, search_store.uri, "views/parameters.py")
    specs = plotly_specs(app)
    (parcoords,) = [t for spec in specs for t in spec["data"] if t.get("type") == "parcoords"]
    axes = {d["label"]: d for d in parcoords["dimensions"]}
    assert axes["model.n_members"]["ticktext"] == ["2", "3"]  # no tick at 2.5
    assert "tickvals" in axes["optim.lr"]  # log10 axis, labelled in lr's units


def test_importance_is_refused_with_its_reason_then_computed_on_request(
    monkeypatch, search_store, trials
):
    finished = int(((trials["status"] == "finished") & trials["final/val/acc"].notna()).sum())
    pruned = int((trials["status"] == "pruned").sum())
    assert finished < 5 <= finished + pruned, "the fixture search should stop some trials"
    app = open_app(monkeypatch, search_store.uri, "views/parameters.py")
    (warning,) = app.warning
    assert f"at least 5 finished trials with val/acc; this search has {finished}" in warning.value
    assert not [t for s in plotly_specs(app) for t in s["data"] if t.get("type") == "bar"]
    app.toggle(key=f"{search_store.parent_run_id}-importance-pruned").set_value(True).run()
    assert not app.warning
    assert [t for s in plotly_specs(app) for t in s["data"] if t.get("type") == "bar"]
    assert f"{pruned} stopped early at their last epoch's value" in texts(app)
    assert "the search's Optuna study" in texts(app)  # its own study, beside the search


def test_compare_page_side_by_side(monkeypatch, search_store, trials):
    picked = trials.loc[trials["val/acc"].notna(), "run_id"].tolist()[:2]
    app = open_app(
        monkeypatch, search_store.uri, "views/compare.py", {search_store.parent_run_id: picked}
    )
    names = trials.set_index("run_id").loc[picked, "trial_id"].tolist()
    differences, metrics = (frame.value for frame in app.dataframe)
    assert list(differences.columns) == names and len(differences) > 0
    assert list(metrics.columns) == names and "val/nll_ts" in metrics.index
    curves, members, calibration = plotly_specs(app)
    assert sorted(t["name"] for t in curves["data"]) == sorted(names)
    assert {t["name"] for t in calibration["data"]} == {"before", "after"}
    app.radio(key=f"{search_store.parent_run_id}-split").set_value("test").run()
    assert "test/acc" in app.dataframe[1].value.index


def test_ensembles_page_scores_the_finished_trials(monkeypatch, search_store, trials):
    finished = trials[trials["status"] == "finished"]
    app = open_app(
        monkeypatch,
        search_store.uri,
        "views/ensembles.py",
        {search_store.parent_run_id: finished["run_id"].tolist()},
    )
    table = app.dataframe[0].value
    assert list(table.index) == [*finished["trial_id"], "ensemble"]
    metrics = {m.label: float(m.value) for m in app.metric}
    assert metrics["val accuracy"] == pytest.approx(table.loc["ensemble", "val/acc"], abs=1e-4)
    if len(finished) < 2:
        assert "Greedy selection needs at least 2 finished trials" in texts(app)


def test_missing_store_says_how_to_create_one(monkeypatch, tmp_path):
    app = open_app(monkeypatch, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert "no MLflow store at" in app.error[0].value
    assert "python -m mixmo_search.tune" in app.error[0].value
    assert not (tmp_path / "mlflow.db").exists()


def test_unreachable_server_is_an_error_not_a_crash(monkeypatch, unreachable_uri):
    app = open_app(monkeypatch, unreachable_uri)
    assert "cannot reach the MLflow store" in app.error[0].value
    assert "Store" in app.error[0].value


def test_store_without_the_experiment(monkeypatch, empty_store):
    app = open_app(monkeypatch, empty_store)
    app.sidebar.text_input(key="experiment").set_value("other").run()
    assert "has no experiment 'other'; run a search first" in app.error[0].value


def test_store_without_searches(monkeypatch, empty_store):
    app = open_app(monkeypatch, empty_store)
    assert "holds no search yet" in app.info[0].value
    assert "--mlflow-uri" in app.info[0].value


@pytest.mark.parametrize("page", PAGES)
def test_running_search_without_a_finished_trial(monkeypatch, running_store, page):
    uri, parent = running_store
    app = open_app(monkeypatch, uri, page, {parent: []})
    assert "Running: reloads every" in texts(app)
    expected = {
        "views/trials.py": "2 of 2 trials",
        "views/tradeoff.py": "No trial has finished yet",
        "views/cost.py": "No finished trial of this search has an inference cost",
        "views/parameters.py": "No finished trial has val/acc yet",
        "views/compare.py": "Select trials to compare",
        "views/ensembles.py": "No trial of this search has finished yet",
        "views/promote.py": "No trial has finished yet",
        "views/robustness.py": "No finished trial of this search logged corrupted accuracy",
        "views/ood.py": "No finished trial of this search logged OOD metrics",
    }
    assert expected[page] in texts(app)


@pytest.fixture(scope="module")
def mixed(ensemble_store):
    client = tracking.connect(ensemble_store.uri)
    exp_id = tracking.experiment_id(client, create=False)
    return trial_table.load_trials(client, exp_id, ensemble_store.parent_run_id)


def test_cost_page_draws_mixmo_beside_deep_ensembles(monkeypatch, ensemble_store, mixed):
    app = open_app(monkeypatch, ensemble_store.uri, "views/cost.py")
    (spec,) = plotly_specs(app)
    traces = {t["name"]: t for t in spec["data"]}
    assert {"vanilla (M=1)", "MixMo M=2", "deep ensemble of k vanilla trials"} <= set(traces)
    assert traces["deep ensemble of k vanilla trials"]["text"] == ["k=2", "k=3"]
    assert spec["layout"]["xaxis"]["type"] == "log"
    assert spec["layout"]["xaxis"]["title"]["text"].startswith("cost/flops")
    (table,) = (frame.value for frame in app.dataframe)
    vanilla = mixed[mixed["param.model.n_members"] == 1]
    assert table["cost/params"].tolist() == [
        pytest.approx(k * vanilla["final/cost/params"].iloc[0]) for k in (2, 3)
    ]
    app.selectbox(key=f"{ensemble_store.parent_run_id}-cost-x").set_value("cost/params").run()
    assert plotly_specs(app)[0]["layout"]["xaxis"]["title"]["text"].startswith("cost/params")


def test_greedy_selection_says_why_it_stopped(monkeypatch, ensemble_store, mixed):
    app = open_app(monkeypatch, ensemble_store.uri, "views/ensembles.py")
    app.number_input(key=f"{ensemble_store.parent_run_id}-max-size").set_value(50).run()
    app.toggle[0].set_value(True).run()
    assert not app.warning  # stopping when nothing improves is its normal end
    (done,) = app.success
    assert "Greedy selection chose" in done.value
    assert "no addition improves validation nll" in done.value
    path = app.dataframe[-1].value
    assert path["val/nll"].is_monotonic_decreasing and len(path) < 50
    assert str(path["size"].dtype).startswith("int")


def test_a_zero_delta_is_grey_without_an_arrow(monkeypatch, ensemble_store, mixed):
    one = mixed["run_id"].tolist()[:1]  # an ensemble of one trial equals that trial
    app = open_app(
        monkeypatch, ensemble_store.uri, "views/ensembles.py", {ensemble_store.parent_run_id: one}
    )
    metrics = {m.label: m.proto for m in app.metric}
    for label in ("val accuracy", "val NLL"):
        assert metrics[label].delta == "±0.0000"
        assert metrics[label].color == metrics[label].MetricColor.GRAY
        assert metrics[label].direction == metrics[label].MetricDirection.NONE


def test_promote_page_shows_the_new_holder_right_after_promoting(
    monkeypatch, search_store, private_store, tmp_path
):
    uri = private_store(tmp_path)
    app = open_app(monkeypatch, uri, "views/promote.py")
    model = f"mixmo-{search_store.name}"
    assert f"No version of {model} holds @champion yet." in texts(app)
    plan = plan_promotion(search_store.name, tracking_uri=uri)
    app.checkbox(key=f"{search_store.parent_run_id}-promote-confirm").check().run()
    app.button[0].click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert f"{model} version 1 now holds @champion" in app.success[0].value
    shown = " ".join([texts(app), *(m.value for m in app.markdown)])
    assert (
        f"Trial {plan.trial.trial_id}** is version 1 of **{model}** and holds **@champion**: "
        "promoting it again changes nothing" in shown
    )
    assert "would become a new version" not in shown and "holds @champion yet" not in shown
    assert not app.checkbox(key=f"{search_store.parent_run_id}-promote-confirm").value
    assert app.button[0].disabled  # nothing left to do


def test_robustness_page_draws_mixmo_beside_deep_ensembles_and_each_severity(
    monkeypatch, ensemble_store, mixed
):
    app = open_app(monkeypatch, ensemble_store.uri, "views/robustness.py")
    cost, severity = plotly_specs(app)
    traces = {t["name"]: t for t in cost["data"]}
    assert {"vanilla (M=1)", "MixMo M=2", "deep ensemble of k vanilla trials"} <= set(traces)
    assert traces["deep ensemble of k vanilla trials"]["text"] == ["k=2", "k=3"]
    finished = mixed[mixed["status"] == "finished"]
    drawn = values(traces["MixMo M=2"]["y"]) + values(traces["vanilla (M=1)"]["y"])
    assert sorted(drawn) == pytest.approx(sorted(finished["final/val/corrupt_acc"]))
    panels = {a["text"] for a in severity["layout"]["annotations"]}
    assert panels == {"gaussian_noise", "impulse_noise", "gaussian_blur", "contrast", "jpeg"}
    lines = severity["data"]
    assert len({t["name"] for t in lines}) == 3  # the 3 best trials on val/corrupt_acc
    assert all(values(t["x"]) == [0, 1, 2, 3, 4, 5] for t in lines)  # clean, severities 1-5
    app.radio(key=f"{ensemble_store.parent_run_id}-robust-split").set_value("test").run()
    assert "test accuracy by corruption" in plotly_specs(app)[1]["layout"]["title"]["text"]


def test_ood_page_draws_roc_curves_and_fpr95_against_cost(monkeypatch, ensemble_store, mixed):
    finished = mixed[mixed["status"] == "finished"]
    two = finished["run_id"].tolist()[:2]
    app = open_app(
        monkeypatch, ensemble_store.uri, "views/ood.py", {ensemble_store.parent_run_id: two}
    )
    roc, cost = plotly_specs(app)
    curves = [t for t in roc["data"] if t["name"] != "chance"]
    assert sorted(t["name"] for t in curves) == sorted(finished["trial_id"].iloc[:2])
    for curve in curves:
        fpr, tpr = values(curve["x"]), values(curve["y"])
        assert fpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    traces = {t["name"]: t for t in cost["data"]}
    assert "deep ensemble of k vanilla trials" in traces
    assert cost["layout"]["yaxis"]["title"]["text"] == "val/ood_fpr95_msp"
    app.selectbox(key=f"{ensemble_store.parent_run_id}-ood-score").set_value("mi").run()
    assert plotly_specs(app)[1]["layout"]["yaxis"]["title"]["text"] == "val/ood_fpr95_mi"


def test_trials_page_hides_the_new_metrics_until_asked(monkeypatch, ensemble_store):
    app = open_app(monkeypatch, ensemble_store.uri)
    columns = list(app.dataframe[0].value.columns)
    assert "val/corrupt_acc" in columns and "val/ood_auroc_msp" in columns
    assert "val/aurc" not in columns and "test/ood_fpr95_mi" not in columns
    more = app.multiselect(key=f"{ensemble_store.parent_run_id}-more-metrics")
    assert {"val/aurc", "val/augrc", "test/ood_fpr95_mi", "val/mutual_info"} <= set(more.options)
    more.set_value(["val/aurc", "test/ood_fpr95_mi"]).run()
    assert {"val/aurc", "test/ood_fpr95_mi"} <= set(app.dataframe[0].value.columns)


NO_TORCH_SCRIPT = """
import json, sys
from streamlit.testing.v1 import AppTest
app = AppTest.from_file(sys.argv[1], default_timeout=120)
app.run()
loaded = {}
for page in sys.argv[2:]:
    app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    loaded[page] = "torch" in sys.modules
print(json.dumps(loaded))
"""


def test_pages_that_compute_nothing_with_torch_never_import_it(truth_store, tmp_path):
    """torch costs seconds to import: a page that draws stored numbers must not wait for it
    (the Ensembles page did, 4-5 s, before anything was selected)."""
    import subprocess
    import sys

    pages = ["views/trials.py", "views/tradeoff.py", "views/parameters.py",
             "views/compare.py", "views/ensembles.py", "views/robustness.py", "views/ood.py",
             "views/promote.py"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, str(DASHBOARD), *pages],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**__import__("os").environ, "MLFLOW_TRACKING_URI": truth_store.uri},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert not any(loaded.values()), loaded
