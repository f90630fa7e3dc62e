"""Every page of the dashboard, run by Streamlit's AppTest against real stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mixmo_search import tracking

DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard.py"
PAGES = [
    "views/trials.py",
    "views/tradeoff.py",
    "views/parameters.py",
    "views/compare.py",
    "views/ensembles.py",
]
TIMEOUT_S = 120  # the ensembles page imports torch on its first run


def open_app(
    monkeypatch, uri: str, page: str | None = None, selection: dict[str, list[str]] | None = None
) -> AppTest:
    """Run the dashboard on `uri`, on `page`, with {search run id: selected run ids}."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    app = AppTest.from_file(str(DASHBOARD), default_timeout=TIMEOUT_S)
    for search_id, run_ids in (selection or {}).items():
        app.session_state[f"selected-{search_id}"] = run_ids
    app.run()
    if page is not None:
        app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def texts(app: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("error", "info", "caption") for e in app.get(kind))


def plotly_specs(app: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


@pytest.fixture(scope="module")
def trials(search_store):
    client = tracking.connect(search_store.uri)
    exp_id = tracking.experiment_id(client, create=False)
    return tracking.load_trials(client, exp_id, search_store.parent_run_id)


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
    assert any(t.get("type") == "parcoords" for s in plotly_specs(app) for t in s["data"])
    finished = (trials["status"] == "finished").sum()
    if finished < 2:
        assert "Importance needs at least 2 finished trials" in texts(app)
    else:
        assert any(t.get("type") == "bar" for s in plotly_specs(app) for t in s["data"])


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
    assert "cannot reach the MLflow tracking store" in app.error[0].value
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
        "views/parameters.py": "No finished trial has val/acc yet",
        "views/compare.py": "Select trials to compare",
        "views/ensembles.py": "No trial of this search has finished yet",
    }
    assert expected[page] in texts(app)
