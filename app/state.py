"""What the sidebar chose, shared by the pages: the store, the search and the selected trials.

The selection is the sidebar's "Selected trials" widget; the scatter, the trials table and
the greedy ensemble change it from their callbacks, before the sidebar draws it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import streamlit as st

_SEARCH = "search"


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
    storage: str = ""  # the search's Tune storage folder (tag mixmo.storage), with optuna.db
    preset: str = ""  # the preset its trials start from (a reference recipe, or not)


def set_search(search: Search) -> None:
    st.session_state[_SEARCH] = search


def search() -> Search:
    """The picked search (app/dashboard.py sets it before any page runs)."""
    return st.session_state[_SEARCH]


def selection_key(search_id: str) -> str:
    """The session-state key of the sidebar widget holding the search's selected trials."""
    return f"selected-{search_id}"


def selection(search_id: str) -> list[str]:
    """Run ids of the trials selected in `search_id`."""
    return list(st.session_state.get(selection_key(search_id), []))


def select(search_id: str, run_ids: Sequence[str]) -> None:
    """Replace the selection (duplicates dropped, order kept); call from a callback, or before
    the sidebar draws the selection widget."""
    st.session_state[selection_key(search_id)] = list(dict.fromkeys(run_ids))


def selection_digest(search_id: str, *extra: str) -> str:
    """A short digest of the selection (and `extra`), to key a widget that shows the selection
    as its default: it starts afresh whenever the selection changes elsewhere."""
    text = "\n".join([*selection(search_id), "", *extra])
    return hashlib.sha1(text.encode()).hexdigest()[:12]
