"""Parameters: parallel coordinates and slices of the searched parameters, and Optuna's
importances (refused, with the reason, on too few trials)."""

from __future__ import annotations

import streamlit as st

from app import charts, parameters, queries, state

search = state.search()
trials = queries.trials(search.uri, search.experiment_id, search.run_id)
st.header("Parameters")
params = queries.searched_params(trials)
if trials.empty or not params:
    st.info("This search has no trial with searched parameters yet.")
    st.stop()

declared = parameters.space_params(search.uri, search.run_id)
scales = parameters.param_scales(trials, params, declared)
axes = parameters.axis_categories(trials, scales, declared)
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
    st.plotly_chart(charts.parallel_figure(shown, params, target, scales, axes))
    param = st.selectbox(
        "Slice: objective against",
        params,
        format_func=lambda p: f"{p.removeprefix('param.')} ({scales[p]} axis)",
        key=f"{search.run_id}-slice",
    )
    st.plotly_chart(
        charts.slice_figure(shown, param, target, scales[param], axes.get(param)), key="slice"
    )
    st.caption(
        "Categorical parameters (the space's categorical and fixed ones, and integers with few "
        "values) get an axis of their values; loguniform ones, and positive values spanning "
        f"{parameters.LOG_SPAN:g}x or more, a log axis."
    )
else:
    st.info(f"No {'' if everyone else 'finished '}trial has {target} yet.")

st.subheader("Parameter importance")
left, right = st.columns([2, 1])
evaluator = left.radio(
    "Evaluator", list(parameters.EVALUATORS), horizontal=True, key=f"{search.run_id}-evaluator",
    help=f"PED-ANOVA is fast at any size; fANOVA and mean decrease impurity fit a forest, on "
    f"at most {parameters.MAX_FOREST_TRIALS} trials (a seeded sample beyond)",
)  # fmt: skip
with_pruned = right.toggle(
    "Include trials stopped early",
    key=f"{search.run_id}-importance-pruned",
    help="score pruned trials on their last epoch's value too: more trials, but values from "
    "earlier epochs than the finished trials', which favours fast starters",
)
refusal = parameters.importance_refusal(trials, params, target, include_pruned=with_pruned)
if refusal:
    st.warning(refusal, icon="⚠️")
else:
    mode = queries.metric_mode(target, search.objectives)
    found = parameters.param_importances(
        trials, params, target, mode, evaluator=evaluator, include_pruned=with_pruned,
        scales=scales, study=(search.storage, search.name),
    )  # fmt: skip
    pool = parameters.importance_pool(trials, target, include_pruned=with_pruned)
    if not found.scores.empty:
        st.plotly_chart(charts.importance_figure(found.scores, target))
    finished = int((pool["status"] == "finished").sum())
    caption = (
        f"Optuna's {evaluator} evaluator on {found.trials} trials of {found.source} "
        f"({finished} finished"
        + (f", {len(pool) - finished} stopped early at their last epoch's value" if with_pruned
           else "")
        + f"), scored on {target}; importances sum to 1."
        + (f" Left out, as Optuna does: {', '.join(found.left_out)}, drawn in only some "
           "trials (conditional)." if found.left_out else "")
        + (" No parameter varies among them." if found.scores.empty else "")
    )  # fmt: skip
    st.caption(caption)
