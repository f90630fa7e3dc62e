"""Robustness: accuracy under corruption, per corruption and severity, and MixMo trials beside
deep ensembles of vanilla trials at equal inference cost (docs/method.md §Uncertainty)."""

from __future__ import annotations

import streamlit as st

from app import charts, ensembles, queries, shifts, state
from mixmo_search import tracking

search = state.search()
trials = queries.trials(search.uri, search.experiment_id, search.run_id)
st.header("Robustness to corruptions")
st.caption(
    "Trials trained with `data.corruptions` score their kept epoch on corrupted copies of the "
    "validation and test images: generated ones (the Hendrycks-Dietterich recipe in torch, "
    "severities 1-5) on validation, which may select; generated ones or the published "
    "CIFAR-10-C / CIFAR-100-C on test, which only reports."
)
scored = shifts.robust(trials)
if scored.empty:
    st.info(
        "No finished trial of this search logged corrupted accuracy (`val/corrupt_acc`). Give "
        "the search's base `data.corruptions: all` (and `data.ood` for the OOD page), as "
        "search_spaces/robustness.yaml does."
    )
    st.stop()

note = queries.reference_note(search.preset, "test/corrupt_acc")
if note:
    st.caption(note)
left, right = st.columns(2)
split = left.radio("Split", ["val", "test"], horizontal=True, key=f"{search.run_id}-robust-split")
x = right.selectbox(
    "Inference cost (log axis)", list(ensembles.COSTS),
    format_func=lambda c: f"{c}: {ensembles.COSTS[c]}", key=f"{search.run_id}-robust-x",
)  # fmt: skip
y = f"{split}/corrupt_acc"
costed = ensembles.costed(scored)
ranked = ensembles.vanilla_ranking(costed, "val/corrupt_acc", "max")
names = dict(zip(trials["run_id"], trials["trial_id"], strict=True))
try:
    baseline = shifts.deep_ensembles_corrupted(
        search.uri, tuple(ranked), tuple(names[r] for r in ranked),
        ensembles.costs_of(costed, ranked),
    )  # fmt: skip
except tracking.TrackingError as err:
    st.error(str(err))
    st.stop()
st.plotly_chart(
    charts.cost_figure(
        costed, baseline.reindex(columns=["k", "members", x, y]).dropna(subset=[x, y]),
        x=x, y=y, x_title=f"{x}: {ensembles.COSTS[x]}", selected=state.selection(search.run_id),
    ),
    key=f"robust-cost-{split}-{x}",
)  # fmt: skip
st.caption(
    f"Mean {split} accuracy over corruptions and severities. Deep ensembles: the k best of the "
    f"{len(ranked)} finished vanilla (M = 1) trials on val/corrupt_acc, their stored corrupted "
    "logits averaged; costs add up as on the Accuracy-vs-cost page."
    if not baseline.empty
    else "No deep-ensemble baseline: it needs at least 2 finished vanilla (M = 1) trials; "
    "search `model.n_members` with 1 among its values."
)

selected = [r for r in state.selection(search.run_id) if r in set(scored["run_id"])]
shown = selected or queries.by_objective(scored, "val/corrupt_acc", "max")["run_id"][:3].tolist()
rows = shifts.severity_rows(search.uri, shown, [names[r] for r in shown], split)
st.plotly_chart(charts.severity_figure(rows, split), key=f"robust-severity-{split}")
st.caption(
    ("The selected trials" if selected else "The 3 best trials on val/corrupt_acc (select "
     "others in the sidebar)") + "; severity 0 is the same images uncorrupted. Table: "
    "`predictions/<split>_corruptions.json` of each trial in MLflow."
)  # fmt: skip
