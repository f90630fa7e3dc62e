"""A Ray Tune callback that mirrors every trial into a nested MLflow run, from the driver.

Writing from the driver keeps one writer per store (no SQLite lock fights between trial
processes) and works on a cluster where only the driver reaches the tracking server.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from mixmo_search import tracking
from mixmo_search.errors import ConfigError
from mixmo_search.search import outcomes, placement
from mixmo_search.search.optuna_search import OPTUNA_TRIAL

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from ray.tune.experiment import Trial

    from mixmo_search.search.run import SearchPlan

# Tune's own bookkeeping keys: not worth an MLflow metric each
_SKIP = {"timestamp", "time_this_iter_s", "time_total_s", "pid", "training_iteration",
         "time_since_restore", "iterations_since_restore", "done", "epoch"}  # fmt: skip


class MlflowTrials(Callback):
    """Creates, updates and closes one child run per trial under the search's parent run.

    It holds the tracking URI, not a client, because Tune pickles its callbacks with the
    experiment; `setup` connects and reattaches to the runs of a resumed search.
    """

    def __init__(self, uri: str, exp_id: str, parent_id: str, plan: SearchPlan) -> None:
        self.uri, self.exp_id, self.parent_id = uri, exp_id, parent_id
        self.search, self.space, self.base = plan.name, plan.space, plan.base
        self.client: MlflowClient | None = None
        self.runs: dict[str, str] = {}

    def setup(self, **info: Any) -> None:
        self.client = tracking.connect(self.uri)
        self.runs = tracking.trial_runs(self.client, self.exp_id, self.parent_id)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "client": None, "runs": {}}

    def _run_id(self, trial: Trial) -> str:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            sampled = _sampled(trial.config)
            try:
                params = self.space.trial_config({**self.base, **sampled}).flat()
            except ConfigError:  # an invalid combination: the trial fails and says why
                params = {**self.space.overrides, **self.base, **sampled}
            number = trial.config.get(OPTUNA_TRIAL)
            run_id = tracking.start_trial_run(
                self.client, self.exp_id, self.parent_id, search=self.search,
                trial_id=trial.trial_id, params={**params, "searched": sorted(sampled)},
                tags={} if number is None else {tracking.OPTUNA_TRIAL: str(number)},
            )  # fmt: skip
            self.runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        tracking.set_status(self.client, self._run_id(trial), "running")

    def on_trial_restore(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        tracking.set_status(self.client, self._run_id(trial), "running")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Trial, result: dict, **info
    ) -> None:
        metrics = {k: v for k, v in result.items() if k not in _SKIP}
        tracking.log_metrics(self.client, self._run_id(trial), metrics, step=result["epoch"])
        if result.get("iterations_since_restore") == 1:  # where it trains: at each (re)start
            for key, value in placement.mlflow_tags(result).items():
                self.client.set_tag(self._run_id(trial), key, value)

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        run_id = self._run_id(trial)
        if not outcomes.finished(trial):  # stopped by the scheduler: KILLED, named so
            epoch = trial.last_result.get("epoch", "?")
            self.client.update_run(run_id, name=f"{trial.trial_id} (pruned at epoch {epoch})")
            tracking.set_status(self.client, run_id, "pruned")
            return
        if trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as folder:
                self._log_artifacts(run_id, Path(folder))
        tracking.set_status(self.client, run_id, "finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        reason = outcomes.error_reason(trial)
        tracking.set_status(self.client, self._run_id(trial), "failed", reason=reason)

    def _log_artifacts(self, run_id: str, folder: Path) -> None:
        predictions = folder / "predictions"
        if predictions.is_dir():
            self.client.log_artifacts(run_id, str(predictions), "predictions")
        if (folder / "best.pt").exists():
            self.client.log_artifact(run_id, str(folder / "best.pt"), "checkpoint")


def _sampled(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if "." in k}
