"""Ensembles across trials (beyond the paper): stored predictions of finished trials, combined."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, ensembles, queries, state
from mixmo_search import tracking

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
MAX_SIZE = 10  # default limit of greedy selection; it usually stops earlier

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
        # each trial's own row is its logged metrics (as on Trials and Compare); only the
        # ensemble is computed, from the stored predictions
        best = trials.set_index("run_id").loc[picked].set_index("trial_id")
        whole = pd.Series(ensembles.combined(search.uri, tuple(picked)))
        table = pd.concat([best.reindex(columns=list(SHOWN)), whole[list(SHOWN)].to_frame(
            "ensemble").T])  # fmt: skip
        cells = st.columns(4)
        cells[0].metric(
            "val accuracy",
            f"{whole['val/acc']:.4f}",
            **ensembles.delta(whole["val/acc"], best["val/acc"].max(), "max"),
            delta_description="vs best trial",
        )
        cells[1].metric(
            "val NLL",
            f"{whole['val/nll']:.4f}",
            **ensembles.delta(whole["val/nll"], best["val/nll"].min(), "min"),
            delta_description="vs best trial",
        )
        cells[2].metric("disagreement between trials", f"{whole['val/disagreement']:.4f}")
        cells[3].metric("ratio-error between trials", f"{whole['val/ratio_error']:.4f}")
        st.dataframe(table, column_config=queries.column_formats(SHOWN))
        st.caption(
            "Rows: each trial's logged metrics (its trainer's, as on Trials), then the ensemble, "
            "computed from the trials' stored float16 predictions (a trial recomputed that way "
            "differs from its logged metrics by about 1e-4, or one sample moving a bin of ECE)."
        )
    else:
        st.info(
            "Select finished trials to ensemble them: points on *Accuracy vs diversity*, rows "
            "in *Trials*, or names under *Selected trials* in the sidebar."
        )

    st.subheader("Greedy selection of an ensemble")
    pool = list(names)
    if len(pool) < 2:
        st.info(f"Greedy selection needs at least 2 finished trials; this search has {len(pool)}.")
        st.stop()
    left, right = st.columns(2)
    max_size = left.number_input(
        "At most this many members",
        1,
        100,
        MAX_SIZE,
        key=f"{search.run_id}-max-size",
        help="a trial may be added more than once, which weights its vote",
    )
    metric = right.radio("Optimise on validation", ensembles.GREEDY_METRICS, horizontal=True)
    st.caption(
        "Caruana et al. (2004): start from the best trial on validation, then add, with "
        "replacement, the trial that most improves the validation metric; stop when no "
        "addition improves it."
    )
    if st.toggle(f"Run it over all {len(pool)} finished trials (downloads their predictions)"):
        labels = tuple(names[r] for r in pool)
        result = ensembles.greedy(search.uri, tuple(pool), labels, int(max_size), metric)
        path = result.path.copy()
        path.insert(1, "added", path["run_id"].map(names))
        size = len(path)
        if result.improving:  # the limit stopped it: more members might still help
            st.info(
                f"Greedy selection reached the limit of {size} members while still improving "
                "validation: raise the limit to let it grow."
            )
        else:  # its normal end
            st.success(f"Greedy selection chose {size} members and stopped: {result.reason}.")
        st.plotly_chart(charts.greedy_figure(path, metric))
        st.dataframe(
            path[["size", "added", *SHOWN]], hide_index=True,
            column_config=queries.column_formats(["size", *SHOWN]),
        )  # fmt: skip
        st.button(
            "Select these trials",
            on_click=state.select,
            args=(search.run_id, path["run_id"].tolist()),
        )
except tracking.TrackingError as err:
    st.error(str(err))
