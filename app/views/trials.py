"""Trials: every trial of the search with its key metrics, best first on the search's first
objective, filterable; rows select trials."""

from __future__ import annotations

import streamlit as st

from app import parameters, queries, state

search = state.search()
trials = queries.trials(search.uri, search.experiment_id, search.run_id)
st.header(f"Trials of {search.name}")
if trials.empty:
    st.info("This search has no trial yet: trials appear here as soon as Ray starts them.")
    st.stop()

published = queries.published_note(search.preset, trials)
if published:
    st.caption(published)
references = queries.reference_table(search.preset, trials)
if not references.empty:
    with st.expander("Published uncertainty figures (uncertainty-baselines)"):
        st.dataframe(references, hide_index=True)

counts = trials["status"].value_counts()
for column, (label, value) in zip(
    st.columns(1 + len(counts)), [("trials", len(trials)), *counts.items()], strict=True
):
    column.metric(label, int(value))

params = queries.searched_params(trials)
declared = parameters.space_params(search.uri, search.run_id)
scales = parameters.param_scales(trials, params, declared)
present = [s for s in queries.STATUSES if s in counts]
with st.expander("Filters", expanded=True):
    statuses = st.multiselect("Status", present, default=present, key=f"{search.run_id}-status")
    choices, ranges = {}, {}
    for column, slot in zip(params, st.columns(max(len(params), 1)), strict=False):
        options = queries.filter_options(trials, column, scales[column])
        name, key = column.removeprefix("param."), f"{search.run_id}-{column}"
        if isinstance(options, tuple):
            low, high = options
            ranges[column] = slot.slider(
                name, low, high, value=options, step=(high - low) / 100, format="%.4g", key=key
            )
        else:
            choices[column] = slot.multiselect(name, options, default=options, key=key)
objective = next(iter(search.objectives), "val/acc")
mode = queries.metric_mode(objective, search.objectives)
shown = queries.filter_trials(trials, statuses=statuses, choices=choices, ranges=ranges)
shown = queries.by_objective(shown, objective, mode)
axes = queries.pareto_axes(search.objectives)
front = queries.front_run_ids(trials, list(axes), list(axes.values()))

shown_first = [m for m in dict.fromkeys([*search.objectives, *queries.KEY_METRICS]) if m in trials]
more = st.multiselect(
    "More metrics", [m for m in queries.metric_columns(trials) if m not in shown_first],
    key=f"{search.run_id}-more-metrics",
    help="every other metric the trials logged: selective prediction, OOD detection, "
    "corruptions, members, cost...",
)  # fmt: skip
metrics = [*shown_first, *more]
table = queries.trials_table(
    shown, params=params, metrics=metrics, exp_id=search.experiment_id, ui_base=search.ui_base,
    pareto=front,
)  # fmt: skip
shown_ids = shown["run_id"].tolist()
selected = state.selection(search.run_id)
default_rows = [shown_ids.index(r) for r in selected if r in shown_ids]


def select_rows(key: str) -> None:
    """Table rows chosen: select them, keeping selected trials the filters hide."""
    rows = st.session_state[key].selection.rows
    hidden = [r for r in selected if r not in shown_ids]
    state.select(search.run_id, hidden + [shown_ids[i] for i in rows])


# Keyed by rows and selection, so row indices never point at other trials and a selection
# made elsewhere shows here.
table_key = "trials-" + state.selection_digest(search.run_id, *shown_ids)
st.dataframe(
    table,
    key=table_key,
    hide_index=True,
    placeholder=queries.NOT_DRAWN,
    on_select=lambda: select_rows(table_key),
    selection_mode="multi-row",
    selection_default={"selection": {"rows": default_rows}},
    column_config={
        "trial_id": st.column_config.TextColumn(
            "trial", pinned=True, help="Ray Tune's trial id (MLflow tag mixmo.trial_id)"
        ),
        "optuna_trial": st.column_config.NumberColumn(
            "Optuna #",
            pinned=True,
            format="%d",
            help="the trial's number in the search's Optuna study (optuna.db in its storage "
            "folder, the number optuna-dashboard shows): the trial tag mixmo.optuna_trial; "
            "ties on the objective go to the lowest number, as Optuna's best_trial",
        ),
        "status": st.column_config.TextColumn(
            "status", help="how the trial ended (MLflow tag mixmo.status): " + ", ".join(
                queries.STATUSES)
        ),
        "epochs": st.column_config.NumberColumn(
            "epochs", format="%d",
            help="epochs trained: the budget a trial used before it finished or stopped",
        ),
        "pareto": st.column_config.CheckboxColumn(
            "Pareto", help="on the search's Pareto set: the finished trials no other finished "
            "trial beats on " + " and ".join(f"{m} ({d})" for m, d in axes.items())
            + " (the summary's set, and the front on Accuracy vs diversity)",
        ),
        "start_time": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm"),
        "mlflow": st.column_config.LinkColumn("MLflow", display_text="open run"),
        **queries.column_formats(metrics),
    },
)  # fmt: skip
st.caption(
    f"{len(shown)} of {len(trials)} trials, best {objective} ({mode}) first (ties: the lowest "
    "Optuna trial number, Optuna's best_trial). Metrics are the best validation epoch's for "
    "finished trials (test is reported, never selected on) and the last epoch's of the "
    f"*epochs* they ran otherwise. {queries.NOT_DRAWN}: a param the trial's sampler did not "
    "draw (a conditional one, e.g. the mixing block of an M = 1 trial). "
    "Tick rows to select trials for the other pages; the MLflow links need "
    f"`mlflow ui --backend-store-uri {search.uri}` serving at {search.ui_base}."
)
