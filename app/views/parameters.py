"""Parameters: parallel coordinates of the searched parameters and Optuna's importances."""

from __future__ import annotations

import streamlit as st

from app import charts, queries, state

search = state.search()
trials = queries.trials(search.uri, search.experiment_id, search.run_id)
st.header("Parameters")
params = queries.searched_params(trials)
if trials.empty or not params:
    st.info("This search has no trial with searched parameters yet.")
    st.stop()

metrics = queries.metric_columns(trials)
first = next(iter(search.objectives), "val/acc")
left, right = st.columns([2, 1])
target = left.selectbox(
    "Objective",
    metrics,
    index=metrics.index(first) if first in metrics else 0,
    key=f"{search.run_id}-target",
)
everyone = right.toggle(
    "Include unfinished trials",
    key=f"{search.run_id}-everyone",
    help="pruned and running trials enter with their last epoch's metrics",
)
shown = trials if everyone else trials[trials["status"] == "finished"]
if shown[target].notna().any():
    st.plotly_chart(charts.parallel_figure(shown, params, target))
else:
    st.info(f"No {'' if everyone else 'finished '}trial has {target} yet.")

st.subheader("Parameter importance")
evaluator = st.radio("Evaluator", list(queries.EVALUATORS), horizontal=True)
mode = queries.metric_mode(target, search.objectives)
importances = queries.param_importances(trials, params, target, mode, evaluator=evaluator)
finished = int(((trials["status"] == "finished") & trials[target].notna()).sum())
if importances.empty:
    st.info(
        f"Importance needs at least 2 finished trials with {target} and a parameter that "
        f"varies among them; this search has {finished} finished so far."
    )
else:
    st.plotly_chart(charts.importance_figure(importances, target))
    st.caption(
        f"Optuna's {evaluator} evaluator on the {finished} finished trials, replayed into an "
        "in-memory study; importances sum to 1."
    )
