from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from app import charts, ensembles, parameters, queries
from mixmo_search import tracking

OBJECTIVES = ["val/acc", "val/disagreement"]


@pytest.fixture(scope="module")
def trials(search_store):
    client = tracking.connect(search_store.uri)
    exp_id = tracking.experiment_id(client, create=False)
    return queries.trials(search_store.uri, exp_id, search_store.parent_run_id)


def run_ids_in(figure: go.Figure, *, skip: tuple[str, ...] = ()) -> list[str]:
    return [
        point[0]
        for trace in figure.data
        if trace.name not in skip and trace.customdata is not None
        for point in trace.customdata
    ]


def test_tradeoff_has_every_trial_the_front_and_the_selection(trials):
    front = queries.front_run_ids(trials, OBJECTIVES, ["max", "max"])
    selected = trials["run_id"].tolist()[:3]
    figure = charts.tradeoff_figure(
        trials,
        x="val/disagreement",
        y="val/acc",
        params=queries.searched_params(trials),
        front=front,
        selected=selected,
    )
    names = [trace.name for trace in figure.data]
    scored = trials[trials["val/acc"].notna() & trials["val/disagreement"].notna()]
    assert len(scored) >= 2, "the fixture search should score at least two trials"
    assert sorted(run_ids_in(figure, skip=("selected",))) == sorted(scored["run_id"])
    blocks = set(scored["param.mixing.block"])
    assert all(any(name.startswith(block) for name in names) for block in blocks)
    line = figure.data[names.index("Pareto front")]
    assert len(line.x) == len(front)
    ring = figure.data[names.index("selected")]
    assert sorted(p[0] for p in ring.customdata) == sorted(set(selected) & set(scored["run_id"]))
    assert "mixing.p" in figure.data[0].hovertemplate
    assert figure.data[0].marker.size is not None  # sized by M


def test_tradeoff_without_values_is_an_empty_chart(trials):
    unscored = trials.assign(**{"val/acc": float("nan")})
    figure = charts.tradeoff_figure(unscored, x="val/disagreement", y="val/acc", params=[])
    assert run_ids_in(figure) == []


def test_parallel_coordinates_have_an_axis_per_param_and_the_objective(trials):
    params = queries.searched_params(trials)
    figure = charts.parallel_figure(trials, params, "val/acc")
    (parcoords,) = figure.data
    labels = [d.label for d in parcoords.dimensions]
    assert labels == [p.removeprefix("param.") for p in params] + ["val/acc"]
    block = parcoords.dimensions[labels.index("mixing.block")]
    assert set(block.ticktext) == set(trials["param.mixing.block"])
    assert len(parcoords.dimensions[-1].values) == trials["val/acc"].notna().sum()


def test_importance_bars(trials):
    params = queries.searched_params(trials)
    everyone = trials.assign(status="finished")
    scores = parameters.param_importances(everyone, params, "val/acc", "max").scores
    figure = charts.importance_figure(scores, "val/acc")
    assert sorted(figure.data[0].y) == sorted(p.removeprefix("param.") for p in scores["param"])


def test_learning_curves_one_line_per_trial(search_store, trials):
    history = queries.histories(search_store.uri, tuple(trials["run_id"]), ("val/acc",))
    labels = dict(zip(trials["run_id"], trials["trial_id"], strict=True))
    figure = charts.curves_figure(history, labels, "val/acc")
    reported = trials.loc[trials["val/acc"].notna(), "trial_id"]  # failed trials may have none
    assert sorted(trace.name for trace in figure.data) == sorted(reported)


def test_member_and_calibration_bars(trials):
    run_ids = trials.loc[trials["val/acc"].notna(), "run_id"].tolist()[:2]
    members = charts.members_figure(queries.member_accuracies(trials, run_ids, "val"), "val")
    assert {trace.name for trace in members.data} >= {"member0", "member1"}
    calibration = charts.calibration_figure(queries.calibration(trials, run_ids, "val"), "val")
    assert {trace.name for trace in calibration.data} == {"before", "after"}


def test_greedy_curve(search_store, trials):
    finished = trials[trials["status"] == "finished"]
    result = ensembles.greedy(
        search_store.uri, tuple(finished["run_id"]), tuple(finished["trial_id"]), 10, "acc"
    )
    figure = charts.greedy_figure(result.path, "acc")
    assert {trace.name for trace in figure.data} == {"val/acc", "test/acc"}
    assert list(figure.data[0].x) == list(range(1, len(result.path) + 1))


def test_trials_stopped_early_are_faded(trials):
    figure = charts.tradeoff_figure(trials, x="val/disagreement", y="val/acc", params=[])
    for trace in figure.data:
        if trace.customdata is None or trace.name == "selected":
            continue
        faded = str(trace.name).endswith("pruned")
        assert (trace.opacity == charts.PRUNED_OPACITY) == faded, trace.name
    assert "epochs" in figure.data[0].hovertemplate


@pytest.fixture(scope="module")
def scales(search_store, trials):
    declared = parameters.space_params(search_store.uri, search_store.parent_run_id)
    return parameters.param_scales(trials, queries.searched_params(trials), declared)


def test_parallel_axes_show_categories_and_log_scales(search_store, trials, scales):
    params = queries.searched_params(trials)
    declared = parameters.space_params(search_store.uri, search_store.parent_run_id)
    order = parameters.axis_categories(trials, scales, declared)
    assert order == {"param.mixing.block": ["cut", "linear"], "param.model.n_members": [2, 3]}
    only_m2 = trials[trials["param.model.n_members"] == 2]  # the axis still shows M = 3
    (parcoords,) = charts.parallel_figure(only_m2, params, "val/acc", scales, order).data
    axes = {d.label: d for d in parcoords.dimensions}
    assert list(axes["model.n_members"].ticktext) == ["2", "3"]
    (parcoords,) = charts.parallel_figure(trials, params, "val/acc", scales, order).data
    axes = {d.label: d for d in parcoords.dimensions}
    members = axes["model.n_members"]  # an int of two values: no tick at 2.5
    assert list(members.ticktext) == ["2", "3"] and list(members.tickvals) == [0, 1]
    lr = axes["optim.lr"]  # loguniform: log10 values, ticks labelled in lr's own units
    shown = trials.loc[trials["val/acc"].notna(), "param.optim.lr"]
    np.testing.assert_allclose(lr["values"], np.log10(shown))
    assert [float(t) for t in lr.ticktext] == pytest.approx([10**v for v in lr.tickvals])
    assert axes["mixing.p"].ticktext is None  # uniform: a plain linear axis


def test_slice_axes(trials, scales):
    log = charts.slice_figure(trials, "param.optim.lr", "val/acc", scales["param.optim.lr"])
    assert log.layout.xaxis.type == "log"
    members = charts.slice_figure(trials, "param.model.n_members", "val/acc", "categorical")
    assert members.layout.xaxis.type == "category"
    assert list(members.layout.xaxis.categoryarray) == ["2", "3"]


def test_cost_figure_draws_trials_and_the_deep_ensembles(trials):
    points = trials.assign(
        **{"param.model.n_members": [1, 1, 1, 2, 2, 3][: len(trials)], "cost/flops": 1e6}
    )
    baseline = pd.DataFrame(
        {"k": [2, 3], "members": ["a, b", "a, b, c"], "cost/flops": [2e6, 3e6],
         "val/acc": [0.9, 0.91]}
    )  # fmt: skip
    figure = charts.cost_figure(
        points, baseline, x="cost/flops", y="val/acc", x_title="FLOPs",
        selected=trials["run_id"].tolist()[:1],
    )  # fmt: skip
    names = [trace.name for trace in figure.data]
    assert names[:3] == ["vanilla (M=1)", "MixMo M=2", "MixMo M=3"]
    line = figure.data[names.index("deep ensemble of k vanilla trials")]
    assert list(line.text) == ["k=2", "k=3"] and list(line.x) == [2e6, 3e6]
    assert figure.layout.xaxis.type == "log"
    assert len(figure.data[names.index("selected")].x) == 1


def test_severity_and_roc_figures_draw_their_frames():
    rows = pd.DataFrame({
        "trial": ["a"] * 3 + ["b"] * 3, "corruption": ["jpeg"] * 6,
        "severity": [0, 1, 2] * 2, "acc": [0.9, 0.8, 0.7, 0.95, 0.9, 0.85],
    })  # fmt: skip
    fig = charts.severity_figure(rows, "val")
    assert {t.name for t in fig.data} == {"a", "b"}
    assert [a.text for a in fig.layout.annotations] == ["jpeg"]
    curves = pd.DataFrame({"trial": ["a"] * 3, "fpr": [0, 0.5, 1], "tpr": [0, 0.9, 1]})
    roc = charts.roc_figure(curves, "val ROC")
    assert [t.name for t in roc.data] == ["a", "chance"]
    assert roc.layout.shapes[0].y0 == 0.95  # the FPR95 line


def test_points_several_trials_share_are_labelled_with_their_count(trials):
    finished = trials[trials["status"] == "finished"].head(1)
    assert len(finished) == 1
    twins = pd.concat([finished, finished.assign(run_id="twin", trial_id="twin")])
    frame = pd.concat([trials, twins.tail(1)])
    assert charts.overlapping(frame, "val/disagreement", "val/acc") >= 2
    figure = charts.tradeoff_figure(frame, x="val/disagreement", y="val/acc", params=[])
    (labels,) = [t for t in figure.data if t.name == "overlapping"]
    assert "×2" in labels.text
    assert "twin" in " ".join(labels.hovertext)
    assert "twin" in run_ids_in(figure)  # the hidden trial is still a point of its own


def test_a_param_a_trial_did_not_draw_is_its_own_axis_value(trials):
    undrawn = trials.assign(**{"param.mixing.block": trials["param.mixing.block"].where(
        trials.index % 2 == 0)})  # fmt: skip
    figure = charts.parallel_figure(undrawn, ["param.mixing.block"], "val/acc",
                                    {"param.mixing.block": "categorical"})  # fmt: skip
    (axis, _) = figure.data[0].dimensions
    assert axis.ticktext[-1] == "—"
    scatter = charts.tradeoff_figure(undrawn, x="val/disagreement", y="val/acc",
                                     params=["param.mixing.block"])  # fmt: skip
    assert any(str(t.name).startswith("—") for t in scatter.data)
