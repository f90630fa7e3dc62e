"""Accuracy vs inference cost: MixMo trials beside deep ensembles of vanilla (M = 1) trials.

The paper's claim: MixMo beats data-augmented deep ensembles at no extra inference cost.
"""

from __future__ import annotations

import streamlit as st

from app import charts, ensembles, queries, state
from mixmo_search import tracking

Y_METRICS = ("val/acc", "test/acc", "val/nll", "test/nll")

search = state.search()
trials = queries.trials(search.uri, search.experiment_id, search.run_id)
st.header("Accuracy vs inference cost")
st.caption(
    "MixMo's M subnetworks share one forward pass at test time; a deep ensemble of k networks "
    "pays k. Each finished trial logs its parameters, forward FLOPs per image and images/s, "
    "measured on its own device when it finishes."
)
costed = ensembles.costed(trials)
if costed.empty:
    st.info(
        "No finished trial of this search has an inference cost (`cost/*`) yet: trials log it "
        "when they finish, and trials stopped early never do."
    )
    st.stop()

left, right = st.columns(2)
x = left.selectbox(
    "Inference cost (log axis)",
    list(ensembles.COSTS),
    format_func=lambda c: f"{c}: {ensembles.COSTS[c]}",
    key=f"{search.run_id}-cost-x",
)
y = right.selectbox("Metric", Y_METRICS, key=f"{search.run_id}-cost-y")
rank_on = "val/" + y.split("/")[1]  # members are chosen on validation, never on test
mode = queries.metric_mode(rank_on, search.objectives)
ranked = ensembles.vanilla_ranking(trials, rank_on, mode)
names = dict(zip(trials["run_id"], trials["trial_id"], strict=True))
try:
    baseline = ensembles.deep_ensembles(
        search.uri,
        tuple(ranked),
        tuple(names[r] for r in ranked),
        ensembles.costs_of(costed, ranked),
    )
except tracking.TrackingError as err:
    st.error(str(err))
    st.stop()


def select_points(key: str) -> None:
    points = st.session_state[key].selection.points
    state.select(search.run_id, [p["customdata"][0] for p in points if p.get("customdata")])


chart_key = "cost-" + state.selection_digest(search.run_id, x, y)
figure = charts.cost_figure(
    costed,
    baseline.reindex(columns=["k", "members", x, y]).dropna(subset=[x, y]),
    x=x,
    y=y,
    x_title=f"{x}: {ensembles.COSTS[x]}",
    selected=state.selection(search.run_id),
)
st.plotly_chart(figure, key=chart_key, on_select=lambda: select_points(chart_key))
n_vanilla = len(ranked)
if baseline.empty:
    st.info(
        f"No deep-ensemble baseline: it needs at least 2 finished vanilla (M = 1) trials with "
        f"an inference cost, and this search has {n_vanilla}. Search `model.n_members` with 1 "
        "among its values, as search_spaces/ensembles.yaml does."
    )
else:
    st.caption(
        f"Deep ensembles: the k best of the {n_vanilla} finished vanilla trials on {rank_on} "
        f"(k = {', '.join(str(k) for k in baseline['k'])}), their logits averaged from the "
        "stored predictions. Their parameters and FLOPs add up; their images/s is "
        "1 / Σ (1 / images/s), the members running one after the other. Test metrics only "
        "report."
    )
    shown = ["k", "members", "val/acc", "val/nll", "test/acc", "test/nll", *ensembles.COSTS]
    st.dataframe(
        baseline[shown],
        hide_index=True,
        column_config={c: st.column_config.NumberColumn(c, format="%.4f") for c in Y_METRICS}
        | {c: st.column_config.NumberColumn(c, format="compact") for c in ensembles.COSTS},
    )
st.caption(
    f"{len(costed)} finished trials with a cost; trials stopped early have none. images/s "
    "depends on the machine and on what else ran there: compare trials of one search."
)
