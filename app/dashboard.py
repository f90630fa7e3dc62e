"""`streamlit run app/dashboard.py`: the trials of MixMo searches tracked in MLflow.

This script is the router and the sidebar: it picks the store and the search, then runs the
chosen page of app/views/. A running search reloads itself every REFRESH_S seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from mixmo_search import tracking, tracking_auth

if TYPE_CHECKING:
    from streamlit.delta_generator import DeltaGenerator

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # `streamlit run` puts app/ on the path, not the repository
    sys.path.insert(0, ROOT)

from app import queries, state  # noqa: E402

REFRESH_S = 10  # seconds between reloads of a running search
UI_BASE = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def pick_search(picker: DeltaGenerator) -> state.Search | None:
    """The store fields and the search picker; None, with a message saying what to do, when
    the store cannot be read or holds no search."""
    with st.sidebar.expander("Store"):
        uri = st.text_input(
            "MLflow tracking URI",
            value=tracking.default_tracking_uri(),
            key="uri",
            help="the --mlflow-uri of the search (default: $MLFLOW_TRACKING_URI, else "
            "sqlite:///mlflow.db in the working directory)",
        )
        experiment = st.text_input("Experiment", value=tracking.EXPERIMENT, key="experiment")
        ui_base = st.text_input(
            "MLflow UI address",
            value=UI_BASE,
            key="ui_base",
            help="where `mlflow ui --backend-store-uri URI` serves this store; the trials "
            "table links each trial there",
        )
    try:
        tracking_auth.check_experiment_read(uri, experiment)  # a server's login may not read it
        found = queries.searches(uri, experiment)
    except tracking.TrackingError as err:
        st.error(f"{err}. Change the URI under **Store** in the sidebar.", icon="⚠️")
        return None
    if found.empty:
        st.info(
            f"The experiment {experiment!r} of {uri} holds no search yet. Start one with "
            f"`python -m mixmo_search.tune --space search_spaces/quickstart.yaml --mlflow-uri "
            f"{uri}`, or pick another store under **Store** in the sidebar."
        )
        return None
    rows = found.set_index("run_id")
    labels = {run_id: queries.search_label(row) for run_id, row in rows.iterrows()}
    run_id = picker.selectbox(
        "Search", options=list(labels), format_func=labels.__getitem__, key="search_id"
    )
    row = rows.loc[run_id]
    trials = queries.trials(uri, row["experiment_id"], run_id)
    picker.caption(queries.search_details(row, trials))
    return state.Search(
        uri=uri,
        experiment_id=row["experiment_id"],
        run_id=run_id,
        name=row["search"],
        status=row["status"],
        objectives=queries.objectives(row["objectives"]),
        ui_base=ui_base,
        storage=str(row.get("storage") or ""),
        preset=str(row.get("preset") or ""),
    )


@st.fragment(run_every=REFRESH_S)
def live_refresh() -> None:
    """Reload every page of a running search: its cached trials go stale as trials report."""
    if time.monotonic() - st.session_state["rendered_at"] >= REFRESH_S - 1:
        queries.searches.clear()
        queries.trials.clear()
        queries.histories.clear()
        st.rerun()
    st.caption(f"Running: reloads every {REFRESH_S} s")


def selection_picker(search: state.Search) -> None:
    """The selected trials, shared by every page; points and rows select them too."""
    trials = queries.trials(search.uri, search.experiment_id, search.run_id)
    names = dict(zip(trials["run_id"], trials["trial_id"], strict=True))
    state.select(search.run_id, [r for r in state.selection(search.run_id) if r in names])
    st.multiselect(
        "Selected trials",
        list(names),
        format_func=names.__getitem__,
        key=state.selection_key(search.run_id),
        placeholder="points, rows or names",
        help="select points on Accuracy vs diversity or rows in Trials, or pick names here; "
        "Compare trials and Ensembles show the selection",
    )


st.set_page_config(page_title="mixmo-search", layout="wide")
page = st.navigation(
    [
        st.Page("views/trials.py", title="Trials", icon=":material/table:", default=True),
        st.Page(
            "views/tradeoff.py", title="Accuracy vs diversity", icon=":material/scatter_plot:"
        ),
        st.Page("views/cost.py", title="Accuracy vs cost", icon=":material/speed:"),
        st.Page("views/robustness.py", title="Robustness", icon=":material/shield:"),
        st.Page("views/ood.py", title="OOD detection", icon=":material/travel_explore:"),
        st.Page("views/parameters.py", title="Parameters", icon=":material/tune:"),
        st.Page("views/compare.py", title="Compare trials", icon=":material/compare_arrows:"),
        st.Page("views/ensembles.py", title="Ensembles", icon=":material/join:"),
        st.Page("views/promote.py", title="Promote", icon=":material/publish:"),
    ]
)
st.session_state["rendered_at"] = time.monotonic()
picker = st.sidebar.container()
chosen = pick_search(picker)
if chosen is None:
    st.stop()
state.set_search(chosen)
with picker:
    if chosen.status == "RUNNING":
        live_refresh()
    selection_picker(chosen)
page.run()
