"""Ensembles across trials (beyond the paper): stored predictions of finished trials, combined."""

from __future__ import annotations

import streamlit as st

from app import charts, queries, state
from mixmo_search import tracking
from mixmo_search.ensembles import GREEDY_METRICS

SHOWN = (
    "val/acc",
    "val/nll",
    "val/nll_ts",
    "val/ece",
    "test/acc",
    "test/nll",
    "test/nll_ts",
    "test/ece",
)

search = state.search()
trials = queries.trials(search.uri, search.experiment_id, search.run_id)
st.header("Ensembles across trials")
st.caption(
    'Beyond the paper: like its "× 3" rows, but across the search\'s trials. Each trial votes '
    "with the mean of its heads' logits and the ensemble averages the votes, computed from "
    "the predictions finished trials store; nothing is re-run. Test is reported at the "
    "validation temperature and never used to choose."
)
finished = trials[trials["status"] == "finished"]
if finished.empty:
    st.info(
        "No trial of this search has finished yet, and only finished trials store "
        "predictions: come back when one has (pruned trials never will)."
    )
    st.stop()

names = dict(zip(finished["run_id"], finished["trial_id"], strict=True))
selected = state.selection(search.run_id)
picked = [r for r in selected if r in names]
if len(picked) < len(selected):
    st.caption(
        f"{len(selected) - len(picked)} selected trial(s) did not finish and store no "
        "predictions: left out."
    )
try:
    if picked:
        labels = tuple(names[r] for r in picked)
        table = queries.ensemble(search.uri, tuple(picked), labels)
        whole = table.loc["ensemble"]
        best = table.drop(index="ensemble")
        cells = st.columns(4)
        gain = whole["val/acc"] - best["val/acc"].max()
        cells[0].metric("val accuracy", f"{whole['val/acc']:.4f}", f"{gain:+.4f} vs best trial")
        gain = whole["val/nll"] - best["val/nll"].min()
        cells[1].metric(
            "val NLL",
            f"{whole['val/nll']:.4f}",
            f"{gain:+.4f} vs best trial",
            delta_color="inverse",
        )
        cells[2].metric("disagreement between trials", f"{whole['val/disagreement']:.4f}")
        cells[3].metric("ratio-error between trials", f"{whole['val/ratio_error']:.4f}")
        st.dataframe(table[list(SHOWN)].style.format("{:.4f}"))
    else:
        st.info(
            "Select finished trials to ensemble them: points on *Accuracy vs diversity*, rows "
            "in *Trials*, or names under *Selected trials* in the sidebar."
        )

    st.subheader("Greedy selection of a k-trial ensemble")
    pool = list(names)
    if len(pool) < 2:
        st.info(f"Greedy selection needs at least 2 finished trials; this search has {len(pool)}.")
        st.stop()
    left, right = st.columns(2)
    k = left.number_input("k", 1, len(pool), min(3, len(pool)), key=f"{search.run_id}-k")
    metric = right.radio("Optimise on validation", list(GREEDY_METRICS), horizontal=True)
    if st.toggle(f"Run it over all {len(pool)} finished trials (downloads their predictions)"):
        path = queries.greedy(search.uri, tuple(pool), int(k), metric)
        path.insert(1, "added", path["run_id"].map(names))
        st.plotly_chart(charts.greedy_figure(path, metric))
        st.dataframe(path[["size", "added", *SHOWN]], hide_index=True)
        st.button(
            "Select these trials",
            on_click=state.select,
            args=(search.run_id, path["run_id"].tolist()),
        )
except tracking.TrackingError as err:
    st.error(str(err))
