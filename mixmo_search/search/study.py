"""A search's Optuna study read back: which Optuna trial each Ray trial was.

Ray's OptunaSearch asks the study for one Optuna trial per Ray trial and keeps that mapping
in memory only. A search that logs the number as the trial tag `mixmo.optuna_trial`
(`tracking.OPTUNA_TRIAL`) answers directly; for one that does not, `match_trial_numbers`
finds it from the values drawn: an Optuna trial's params are exactly the values its Ray trial
was configured with, so a Ray trial whose drawn values equal those of one Optuna trial, and
of no other, is that trial. Trials that drew identical values stay unmatched.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

STUDY_FILE = "optuna.db"  # in the search's storage folder (tag `mixmo.storage`)


def study_trials(search_dir: str | Path, study_name: str) -> list[tuple[int, dict[str, Any]]]:
    """(number, params) of every trial of the study `study_name` stored in
    `search_dir/optuna.db`; [] when there is no such file or study."""
    path = Path(search_dir) / STUDY_FILE
    if not path.is_file():  # another machine's search, or not an Optuna search
        return []
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{path}")
    except KeyError:  # no study of that name in the file
        return []
    return [(t.number, dict(t.params)) for t in study.get_trials(deepcopy=False)]


def match_trial_numbers(
    runs: Iterable[Mapping[str, Any]], trials: Iterable[tuple[int, Mapping[str, Any]]]
) -> dict[str, int]:
    """{run id: Optuna trial number} for the trial runs (rows with `run_id`, `param.searched`
    and `param.<key>` values) whose drawn values match exactly one Optuna trial's params."""
    index: dict[tuple[str, ...], dict[tuple[Any, ...], list[int]]] = {}
    for number, params in trials:
        keys = tuple(sorted(params))
        index.setdefault(keys, {}).setdefault(tuple(params[k] for k in keys), []).append(number)
    drawable = {key for keys in index for key in keys}  # fixed params never reach Optuna
    found: dict[str, int] = {}
    for row in runs:
        searched = row.get("param.searched")
        drawn = tuple(sorted(set(_keys(searched)) & drawable))
        values = tuple(row.get(f"param.{key}") for key in drawn)
        numbers = index.get(drawn, {}).get(values, [])
        if len(numbers) == 1:
            found[row["run_id"]] = numbers[0]
    return found


def _keys(searched: Any) -> list[str]:
    """The `searched` param (the list of drawn keys, stored as its repr) as a list."""
    if isinstance(searched, str) and searched.startswith("["):
        return list(ast.literal_eval(searched))
    return []
