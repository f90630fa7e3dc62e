"""Accuracy vs diversity: the trials on two metrics with the Pareto front; points select."""

from __future__ import annotations

import streamlit as st

from app import charts, queries, state

search = state.search()
trials = queries.trials(search.uri, search.experiment_id, search.run_id)
st.header("Accuracy vs diversity")
if trials.empty:
    st.info("This search has no trial yet: points appear as trials report their first epoch.")
    st.stop()

metrics = queries.metric_columns(trials)
# by default the search's Pareto axes: its objective(s), beside diversity for a single one
first, second = list(queries.pareto_axes(search.objectives))[:2]
left, right = st.columns(2)
x = left.selectbox(
    "x axis",
    metrics,
    key=f"{search.run_id}-x",
    index=metrics.index(second) if second in metrics else 0,
)
y = right.selectbox(
    "y axis",
    metrics,
    key=f"{search.run_id}-y",
    index=metrics.index(first) if first in metrics else min(1, len(metrics) - 1),
)
show_pruned = st.toggle(
    "Show trials stopped early",
    value=True,
    key=f"{search.run_id}-show-pruned",
    help="pruned trials, faded: their metrics are their last epoch's, not a finished run's",
)
modes = [queries.metric_mode(x, search.objectives), queries.metric_mode(y, search.objectives)]
front = queries.front_run_ids(trials, [x, y], modes)
plotted = trials if show_pruned else trials[trials["status"] != "pruned"]


def select_points(key: str) -> None:
    """Points chosen on the chart (click, box or lasso): they become the selected trials."""
    points = st.session_state[key].selection.points
    state.select(search.run_id, [p["customdata"][0] for p in points if p.get("customdata")])


chart_key = "tradeoff-" + state.selection_digest(search.run_id, x, y)  # rings show it
figure = charts.tradeoff_figure(
    plotted,
    x=x,
    y=y,
    params=queries.searched_params(trials),
    front=front,
    selected=state.selection(search.run_id),
)
st.plotly_chart(figure, key=chart_key, on_select=lambda: select_points(chart_key))
finished = int((trials["status"] == "finished").sum())
if finished == 0:
    st.info(
        "No trial has finished yet, so there is no Pareto front: pruned and running trials "
        "show their last epoch's metrics."
    )
hidden = len(trials) - len(plotted)
overlapping = charts.overlapping(plotted, x, y)
st.caption(
    f"Colour: mixing block ({queries.NOT_DRAWN}: none drawn, as for M = 1); size: M "
    f"(members); faded open circles: trials stopped early, at their last epoch ({hidden} "
    f"hidden). The dashed line is the Pareto front of the {finished} finished trials on these "
    f"axes ({x}: {modes[0]}, {y}: {modes[1]}); on the search's Pareto axes it is the Trials "
    "page's Pareto column and the summary's set. "
    + (f"{overlapping} trials sit on another's point (same values): ×n labels count each "
       "point's trials, and hovering lists them. " if overlapping else "")
    + "Click, box or lasso points to select trials."
)  # fmt: skip
left, right = st.columns(2)
left.page_link("views/compare.py", label="Compare the selected trials", icon="➡️")
right.page_link("views/ensembles.py", label="Ensemble the selected trials", icon="➡️")
