"""Trials a dead driver leaves behind, ended before the search resumes.

Ray Tune saves a search's state (its trials, the searcher's Optuna trials) every ten seconds or
so (`retention` explains why not after each checkpoint). A driver killed between two saves
leaves trials that started after the last one: they have an Optuna trial and an MLflow run,
but the resumed Tune never heard of them and draws others in their place. Unended, they would
stay RUNNING in the study forever and count as trials in MLflow. `end_lost_trials` tells each
such Optuna trial FAIL (user attr `mixmo.lost` says why) and marks its MLflow run failed with
the reason, then deletes it (MLflow keeps deleted runs, restorable, outside the search's
trials). One that ended in those last seconds keeps the state the study was told (Optuna
keeps a finished trial as it is): a real evaluation the sampler may learn from, though the
search ran another in its place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mixmo_search import tracking
from mixmo_search.search import study_storage
from mixmo_search.search.optuna_search import OPTUNA_TRIAL, tell_trial
from mixmo_search.search.outcomes import Ending, Outcome

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mixmo_search.search.plan import SearchPlan

LOST = "mixmo.lost"
REASON = (
    "lost: its driver died before Ray Tune saved this trial, so the resumed search ran "
    "another in its place"
)


def end_lost_trials(plan: SearchPlan, client: MlflowClient, exp_id: str, parent_id: str) -> int:
    """End the trials of the resumed search `plan` that Tune's saved state does not hold;
    return how many MLflow runs that ended."""
    import optuna

    known = _saved_trials(plan)
    ids = {trial.trial_id for trial in known}
    numbers = {trial.config.get(OPTUNA_TRIAL) for trial in known}
    lost = [r for r in tracking.trial_run_records(client, exp_id, parent_id)
            if r.data.tags[tracking.TRIAL_ID] not in ids]  # fmt: skip
    for run in lost:
        tracking.set_status(client, run.info.run_id, Outcome.FAILED, reason=REASON)
        client.delete_run(run.info.run_id)
    storage = study_storage.open_storage(plan.study_url)
    try:
        study = optuna.load_study(study_name=plan.name, storage=storage)
    except KeyError:  # stopped before the study began
        return len(lost)
    states = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    study_id = storage.get_study_id_from_name(plan.name)
    for trial in study.get_trials(deepcopy=False, states=states):
        if trial.number not in numbers:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, LOST, REASON)
            tell_trial(study, storage, trial.number, Ending(Outcome.FAILED, reason=REASON), None)
    return len(lost)


def _saved_trials(plan: SearchPlan) -> list[Any]:
    """The trials of Tune's last saved state of the search (none if it saved nothing)."""
    from ray import tune

    if not tune.Tuner.can_restore(str(plan.path)):
        return []
    return tune.ExperimentAnalysis(str(plan.path)).trials
