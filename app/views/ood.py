"""Out-of-distribution detection: ROC curves of selected trials and FPR95 against inference
cost, MixMo trials beside deep ensembles of vanilla trials (docs/method.md §Uncertainty)."""

from __future__ import annotations

import streamlit as st

from app import charts, ensembles, queries, shifts, state
from mixmo_search import tracking

search = state.search()
trials = queries.trials(search.uri, search.experiment_id, search.run_id)
st.header("Out-of-distribution detection")
st.caption(
    "Trials trained with `data.ood` score their kept epoch's in-distribution images (the "
    "positives) against OOD images, one set for validation and a disjoint one for test. Each "
    "score is higher for images that look in-distribution."
)
scored = shifts.with_ood(trials)
if scored.empty:
    st.info(
        "No finished trial of this search logged OOD metrics (`val/ood_auroc_msp`). Give the "
        "search's base `data.ood` (sklearn-photos works offline; svhn, cifar10, cifar100, "
        "imagefolder:PATH), as search_spaces/robustness.yaml does."
    )
    st.stop()

left, middle, right = st.columns(3)
split = left.radio("Split", ["val", "test"], horizontal=True, key=f"{search.run_id}-ood-split")
score = middle.selectbox(
    "Score", list(shifts.SCORES), format_func=lambda s: f"{s}: {shifts.SCORES[s]}",
    key=f"{search.run_id}-ood-score",
)  # fmt: skip
x = right.selectbox(
    "Inference cost (log axis)", list(ensembles.COSTS),
    format_func=lambda c: f"{c}: {ensembles.COSTS[c]}", key=f"{search.run_id}-ood-x",
)  # fmt: skip
names = dict(zip(trials["run_id"], trials["trial_id"], strict=True))
selected = [r for r in state.selection(search.run_id) if r in set(scored["run_id"])]
shown = (
    selected
    or queries.by_objective(scored, f"val/ood_auroc_{score}", "max")["run_id"][:3].tolist()
)
try:
    curves = shifts.roc_curves(
        search.uri, tuple(shown), tuple(names[r] for r in shown), split, score
    )
except tracking.TrackingError as err:
    st.error(str(err))
    st.stop()
st.plotly_chart(
    charts.roc_figure(curves, f"{split} ROC, score {score}"), key=f"ood-roc-{split}-{score}"
)
st.caption(
    ("The selected trials" if selected else f"The 3 best trials on val/ood_auroc_{score} "
     "(select others in the sidebar)") + "."
)  # fmt: skip

y = f"{split}/ood_fpr95_{score}"
costed = ensembles.costed(scored)
ranked = ensembles.vanilla_ranking(costed, f"val/ood_auroc_{score}", "max")
baseline = shifts.deep_ensembles_ood(
    search.uri, tuple(ranked), tuple(names[r] for r in ranked),
    ensembles.costs_of(costed, ranked), score,
)  # fmt: skip
st.plotly_chart(
    charts.cost_figure(
        costed, baseline.reindex(columns=["k", "members", x, y]).dropna(subset=[x, y]),
        x=x, y=y, x_title=f"{x}: {ensembles.COSTS[x]}", selected=state.selection(search.run_id),
    ),
    key=f"ood-cost-{split}-{score}-{x}",
)  # fmt: skip
st.caption(
    f"FPR95 (lower is better): the share of OOD images accepted when 95 % of the "
    f"in-distribution ones are. Deep ensembles of the k best vanilla trials on "
    f"val/ood_auroc_{score} score as one k-member network."
)
