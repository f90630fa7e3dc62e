"""Optuna proposes the trials Ray Tune runs, and is told how each really ended.

`StudySearcher` is a Ray Tune `Searcher` (its public hooks: suggest, on_trial_result,
on_trial_complete, save, restore) over Optuna's ask-and-tell interface, on a study kept in a
database (`study_storage`):

- `suggest` asks the study for a trial and draws its params (the space's define-by-run), and
  puts the Optuna trial number in the config (`OPTUNA_TRIAL`), so MLflow, the dashboard and
  optuna-dashboard name the same trial;
- each epoch's value of a single objective is an intermediate value of the Optuna trial
  (samplers that use them can, and optuna-dashboard draws them);
- when Tune ends a trial it is told as `outcomes.classify` says: finished is COMPLETE with its
  final objective values (the best validation epoch's, which MLflow and the summary report
  too), pruned (stopped by the scheduler at a rung) is PRUNED, failed is FAIL; a trial the
  search stopped is not told here: interrupted stays RUNNING until `--resume` continues it,
  and `run` tells a time-budget one FAIL (`tell_stopped`). Every told trial but a finished one
  carries its outcome and reason as user attributes (`mixmo.outcome`, `mixmo.reason`).

Its state (Ray trial id to Optuna number, the trials told, the sampler with its random state)
is saved with Tune's experiment state, so a resumed search reattaches to the study in its
database and goes on where it was. A trial retried from an earlier checkpoint, or a search
resumed after its driver died, reports some epochs again: the study keeps the first value of
each step and each trial's first outcome. `seed_study` warm-starts a new search's study with
an earlier search's trials.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from mixmo_search.errors import UserError
from mixmo_search.search import outcomes, study_storage
from mixmo_search.search.outcomes import Ending, Outcome
from mixmo_search.search.scheduler import RungRecord
from mixmo_search.search.space import SearchSpace

OPTUNA_TRIAL = "_optuna_trial"  # config key of the Optuna trial number (no dot: not a setting)
OUTCOME, REASON = "mixmo.outcome", "mixmo.reason"  # user attributes of a trial told not COMPLETE
CRASHED = "crashed, and Ray Tune's retries did not get past it (its error.txt says why)"
STATES = {Outcome.FINISHED: TrialState.COMPLETE, Outcome.PRUNED: TrialState.PRUNED,
          Outcome.FAILED: TrialState.FAIL, Outcome.OUT_OF_TIME: TrialState.FAIL}  # fmt: skip


class StudySearcher(Searcher):
    """Ray Tune's searcher over an Optuna study in `storage_url` (see the module docstring).

    The objectives stay out of Tune's `metric`: a failed trial's last result carries only its
    reason (`outcomes.FAILED`), which Tune's strict metric check would refuse.
    """

    def __init__(
        self,
        *,
        define_by_run: Callable[[optuna.Trial], dict[str, Any]],
        objectives: list[tuple[str, str]],
        sampler: optuna.samplers.BaseSampler,
        study_name: str,
        storage_url: str,
        rungs: Path,
    ) -> None:
        super().__init__()
        self.define_by_run = define_by_run
        self.metrics = [metric for metric, _ in objectives]
        self.directions = ["maximize" if mode == "max" else "minimize" for _, mode in objectives]
        self.sampler, self.study_name, self.storage_url = sampler, study_name, storage_url
        self.rungs = rungs  # the scheduler's record: who it stopped, where
        self.numbers: dict[str, int] = {}  # Ray trial id -> Optuna trial number
        self.told: set[str] = set()
        self._study: optuna.Study | None = None
        self._db: optuna.storages.BaseStorage | None = None
        self._keys: dict[str, int] = {}  # Ray trial id -> the storage's id of its trial

    def __getstate__(self) -> dict[str, Any]:
        # a connection and the ids read through it are no state
        return {**self.__dict__, "_study": None, "_db": None, "_keys": {}}

    @property
    def study(self) -> optuna.Study:
        """The study, created (or, resumed or warm-started, loaded) on first use."""
        return self._open()[0]

    def _storage(self) -> optuna.storages.BaseStorage:
        return self._open()[1]

    def _open(self) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
        if self._study is None or self._db is None:
            self._db = study_storage.open_storage(self.storage_url)
            self._study = optuna.create_study(
                study_name=self.study_name,
                storage=self._db,
                sampler=self.sampler,
                directions=self.directions,
                load_if_exists=True,
            )
            name_metrics(self._study, self.metrics)
        return self._study, self._db

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        trial = self.study.ask()
        config = self.define_by_run(trial)
        self.numbers[trial_id] = trial.number
        return {**config, OPTUNA_TRIAL: trial.number}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if len(self.metrics) > 1 or trial_id in self.told or trial_id not in self.numbers:
            return  # Optuna keeps intermediate values for one objective only
        value, epoch = result.get(self.metrics[0]), result.get(outcomes.EPOCH)
        if not isinstance(value, int | float) or epoch is None or outcomes.FAILED in result:
            return
        storage = self._storage()
        trial_key = self._trial_key(trial_id)
        frozen = storage.get_trial(trial_key)
        if frozen.state.is_finished() or int(epoch) in frozen.intermediate_values:
            return  # told before the driver died, or an epoch repeated after a retry
        storage.set_trial_intermediate_value(trial_key, int(epoch), float(value))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self.told or trial_id not in self.numbers:
            return
        ending = outcomes.classify(
            result or {},
            objectives=self.metrics,
            pruned_at=RungRecord.load(self.rungs).stopped_at(trial_id),
            error=CRASHED if error else None,
        )
        if ending is None:
            return  # the search stopped it: see the module docstring
        if ending.outcome is Outcome.PRUNED and result:
            self.on_trial_result(trial_id, result)  # the result it was stopped on comes here
        values = None
        if ending.outcome is Outcome.FINISHED:  # classify found every final value
            values = [result[f"final/{m}"] for m in self.metrics]
        self.tell(trial_id, ending, values)

    def tell(self, trial_id: str, ending: Ending, values: list[float] | None) -> None:
        """Tell the study how Ray trial `trial_id` ended (once)."""
        tell_trial(self.study, self._storage(), self.numbers[trial_id], ending, values)
        self.told.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        state = {"numbers": self.numbers, "told": self.told, "sampler": self.sampler}
        Path(checkpoint_path).write_bytes(pickle.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        state = pickle.loads(Path(checkpoint_path).read_bytes())  # Tune's own, trusted folder
        self.numbers, self.told, self.sampler = state["numbers"], state["told"], state["sampler"]
        self._study, self._keys = None, {}

    def _trial_key(self, trial_id: str) -> int:
        """The storage's id of Ray trial `trial_id`'s Optuna trial."""
        if trial_id not in self._keys:
            storage = self._storage()
            study = storage.get_study_id_from_name(self.study_name)
            number = self.numbers[trial_id]
            self._keys[trial_id] = storage.get_trial_id_from_study_id_trial_number(study, number)
        return self._keys[trial_id]


def tell_trial(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    number: int,
    ending: Ending,
    values: list[float] | None,
) -> None:
    """Tell trial `number` of `study` (kept in `storage`) how it ended, unless it was told.
    Interrupted is no end: the trial stays open for --resume."""
    trial_key = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study.study_name), number
    )
    if ending.outcome not in STATES or storage.get_trial(trial_key).state.is_finished():
        return
    if ending.outcome is not Outcome.FINISHED:  # what the state alone does not say
        storage.set_trial_user_attr(trial_key, OUTCOME, ending.outcome.value)
        if ending.reason:
            storage.set_trial_user_attr(trial_key, REASON, ending.reason)
    study.tell(number, values, state=STATES[ending.outcome], skip_if_finished=True)


def tell_stopped(
    storage_url: str, study_name: str, endings: dict[int, Ending], *, others: Ending
) -> None:
    """Tell the study the trials the search stopped for good: {Optuna number: ending} and,
    as `others`, every other trial still open (asked for, never started)."""
    import optuna

    storage = study_storage.open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # stopped before its study began
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tell_trial(study, storage, trial.number, endings.get(trial.number, others), None)


def name_metrics(study: optuna.Study, metrics: list[str]) -> None:
    """Name the study's objectives (optuna-dashboard shows `val/acc`, not `Objective 0`)."""
    if study.metric_names == metrics:
        return
    with warnings.catch_warnings():  # an experimental API of Optuna's, stable since 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(metrics)


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
    name_metrics(study, [o.metric for o in space.objectives])
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
