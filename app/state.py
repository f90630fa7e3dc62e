"""What the sidebar chose, shared by the pages: the store, the search and the selected trials."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import streamlit as st

_SEARCH, _SELECTIONS = "search", "selections"


@dataclass(frozen=True)
class Search:
    """The search the sidebar picked, and where to find it."""

    uri: str
    experiment_id: str
    run_id: str  # the search's parent run
    name: str
    status: str  # the parent run's MLflow status: RUNNING, FINISHED, KILLED, FAILED
    objectives: dict[str, str] = field(default_factory=dict)  # {metric: mode}, search order
    ui_base: str = "http://127.0.0.1:5000"


def set_search(search: Search) -> None:
    st.session_state[_SEARCH] = search


def search() -> Search:
    """The picked search (app/dashboard.py sets it before any page runs)."""
    return st.session_state[_SEARCH]


def selection(search_id: str) -> list[str]:
    """Run ids of the trials selected in `search_id` (scatter, table or a page's picker)."""
    return list(st.session_state.get(_SELECTIONS, {}).get(search_id, []))


def select(search_id: str, run_ids: Sequence[str]) -> None:
    """Replace the selection of `search_id` (duplicates dropped, order kept)."""
    selections = dict(st.session_state.get(_SELECTIONS, {}))
    selections[search_id] = list(dict.fromkeys(run_ids))
    st.session_state[_SELECTIONS] = selections
