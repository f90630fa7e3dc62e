"""Optuna through Ray Tune, with every trial told to the study as it really ended.

Ray's `OptunaSearch` tells a trial that a scheduler stopped early as COMPLETE with its last
epoch's value, so a sampler would learn from an epoch-1 accuracy as if it were a whole
training. Here:

- a trial that trained to the end is COMPLETE with its final objective values, the best
  validation epoch's (`final/val/...`), which MLflow and the summary report too;
- a trial stopped early is PRUNED, and every epoch's value of a single objective is an
  intermediate value of the Optuna trial (samplers that use them can, and optuna-dashboard
  draws them);
- a trial that failed (an error, a diverged loss) is FAIL.

Each Ray trial's config also carries its Optuna trial number (`OPTUNA_TRIAL`), so MLflow,
the dashboard and optuna-dashboard name the same trial. `seed_study` warm-starts a new
search's study with an earlier search's trials.

A trial retried from an earlier checkpoint, or a search resumed after its driver died,
reports some epochs again: the study keeps the first value of each step and each trial's
first outcome.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from mixmo_search.errors import UserError
from mixmo_search.search.space import SearchSpace

OPTUNA_TRIAL = "_optuna_trial"  # config key of the Optuna trial number (no dot: not a setting)


class TrialOutcomeSearch(OptunaSearch):
    """`OptunaSearch` that tells COMPLETE, PRUNED or FAIL as described in the module."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            config[OPTUNA_TRIAL] = self._ot_trials[trial_id].number
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        # Optuna keeps intermediate values for one objective only
        metric = self.metric
        if isinstance(metric, str) and metric in result and trial_id not in self._completed_trials:
            try:
                with warnings.catch_warnings():  # a step reported again keeps its first value
                    warnings.filterwarnings("ignore", "The reported value is ignored")
                    self._ot_trials[trial_id].report(result[metric], step=int(result["epoch"]))
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # told before the driver died, after Tune's last record of the search

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials:
            return
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        finals = [(result or {}).get(f"final/{m}") for m in metrics]
        if error:
            state, values = TrialState.FAIL, None
        elif all(isinstance(v, float | int) and math.isfinite(v) for v in finals):
            state, values = TrialState.COMPLETE, finals
        else:  # stopped by the scheduler before its final evaluation
            state, values = TrialState.PRUNED, None
            # the result the scheduler stopped on comes here, not through on_trial_result
            self.on_trial_result(trial_id, result or {})
        self._ot_study.tell(self._ot_trials[trial_id], values, state=state, skip_if_finished=True)
        self._completed_trials.add(trial_id)


def seed_study(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    space: SearchSpace,
    *,
    source: str,
    source_name: str,
) -> int:
    """Create the study `study_name` holding the finished and pruned trials of the study
    `source_name` in the storage URL `source` that fit `space`; returns how many it added.

    A trial fits when each param `space` still searches lies inside its new distribution;
    params the new space dropped are left out, and params it adds are missing from the old
    trials (samplers treat them as not drawn). Failed trials carry nothing to learn.
    """
    old = optuna.load_study(study_name=source_name, storage=source)
    directions = [
        optuna.study.StudyDirection.MAXIMIZE if o.mode == "max" else
        optuna.study.StudyDirection.MINIMIZE for o in space.objectives
    ]  # fmt: skip
    if list(old.directions) != directions:
        raise UserError(
            f"--warm-start {source_name}: that search optimised {len(old.directions)} "
            f"objective(s) in other directions than this space's "
            f"{[o.metric for o in space.objectives]}; warm-start from a search with the same "
            "objectives"
        )
    study = optuna.create_study(storage=storage, study_name=study_name, directions=directions)
    distributions = space.distributions()
    added = 0
    for trial in old.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        params = {k: v for k, v in trial.params.items() if k in distributions}
        if not params or not all(_fits(distributions[k], v) for k, v in params.items()):
            continue
        study.add_trial(
            optuna.trial.create_trial(
                state=trial.state,
                values=trial.values if trial.state == TrialState.COMPLETE else None,
                params=params,
                distributions={k: distributions[k] for k in params},
                intermediate_values=trial.intermediate_values,
                user_attrs={"warm_start": f"{source_name}#{trial.number}"},
            )
        )
        added += 1
    return added


def _fits(distribution: optuna.distributions.BaseDistribution, value: Any) -> bool:
    """Whether `value` is one the new distribution could draw."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    low, high = distribution.low, distribution.high
    if not (isinstance(value, int | float) and low <= value <= high):
        return False
    step = getattr(distribution, "step", None)
    return step is None or (value - low) % step == 0
