"""Compare trials: learning curves of the selected trials and 2-4 of them side by side."""

from __future__ import annotations

import streamlit as st

from app import charts, queries, state

MAX_SIDE_BY_SIDE = 4
COMPARED = "acc nll nll_ts ece ece_ts temperature disagreement ratio_error member_acc_mean".split()

search = state.search()
trials = queries.trials(search.uri, search.experiment_id, search.run_id)
st.header("Compare trials")
if trials.empty:
    st.info("This search has no trial yet.")
    st.stop()

picked = state.selection(search.run_id)
if not picked:
    st.info(
        "Select trials to compare: points on *Accuracy vs diversity*, rows in *Trials*, or "
        "names under *Selected trials* in the sidebar."
    )
    st.stop()

st.subheader("Learning curves")
per_epoch = queries.epoch_metrics(trials)
metric = st.selectbox(
    "Metric",
    per_epoch,
    index=per_epoch.index("val/acc") if "val/acc" in per_epoch else 0,
    key=f"{search.run_id}-curve",
)
histories = queries.histories(search.uri, tuple(picked), (metric,))
labels = dict(zip(trials["run_id"], trials["trial_id"], strict=True))
st.plotly_chart(charts.curves_figure(histories, labels, metric))

st.subheader("Side by side")
if len(picked) < 2:
    st.info("Pick a second trial to compare them side by side.")
    st.stop()
if len(picked) > MAX_SIDE_BY_SIDE:
    st.info(f"Side by side shows the first {MAX_SIDE_BY_SIDE} of the {len(picked)} trials.")
side = picked[:MAX_SIDE_BY_SIDE]
split = st.radio("Split", ["val", "test"], horizontal=True, key=f"{search.run_id}-split")
left, right = st.columns(2)
left.markdown("**Parameters that differ**")
left.dataframe(queries.param_differences(trials, side))
right.markdown(f"**{split} metrics**")
metrics = [f"{split}/{m}" for m in COMPARED] + ["best_epoch"]
# a row a metric: each in its own format (best_epoch a whole epoch, accuracies 4 decimals)
right.dataframe(queries.formatted(queries.metric_comparison(trials, side, metrics), by_row=True))
left, right = st.columns(2)
members = queries.member_accuracies(trials, side, split)
left.plotly_chart(charts.members_figure(members, split), key="members")
right.plotly_chart(
    charts.calibration_figure(queries.calibration(trials, side, split), split), key="calibration"
)
st.caption(
    "Finished trials show their best validation epoch (test at that epoch, at the validation "
    "temperature after scaling); others their last epoch, and no test metrics. Parameters "
    f"that differ: {queries.NOT_DRAWN} where a trial's sampler did not draw the param. The "
    "same values as on Trials and Ensembles: each trial's logged metrics."
)
