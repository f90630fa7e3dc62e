"""A Ray Tune callback that mirrors every trial into a nested MLflow run, from the driver.

Writing from the driver keeps one writer per store (no SQLite lock fights between trial
processes) and works on a cluster where only the driver reaches the tracking server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from mixmo_search import tracking
from mixmo_search.errors import ConfigError

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
            run_id = tracking.start_trial_run(
                self.client, self.exp_id, self.parent_id, search=self.search,
                trial_id=trial.trial_id, params={**params, "searched": sorted(sampled)},
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

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        run_id = self._run_id(trial)
        finished = "final/val/acc" in trial.last_result
        if finished and trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as folder:
                self._log_artifacts(run_id, Path(folder))
        tracking.set_status(self.client, run_id, "finished" if finished else "pruned")

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        tracking.set_status(self.client, self._run_id(trial), "failed", reason=_reason(trial))

    def _log_artifacts(self, run_id: str, folder: Path) -> None:
        predictions = folder / "predictions"
        if predictions.is_dir():
            self.client.log_artifacts(run_id, str(predictions), "predictions")
        if (folder / "best.pt").exists():
            self.client.log_artifact(run_id, str(folder / "best.pt"), "checkpoint")


def _sampled(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if "." in k}


def _reason(trial: Trial) -> str:
    """The last line of the trial's error file, the exception a user can act on, without the
    module path of our own exception classes (`mixmo_search.errors.ConfigError: ...`)."""
    if trial.error_file and Path(trial.error_file).exists():
        lines = [line for line in Path(trial.error_file).read_text().splitlines() if line]
        reason = lines[-1] if lines else "unknown error"
        return re.sub(r"^mixmo_search[\w.]*\.(\w+): ", _own_error, reason)
    return "unknown error (no error file)"


def _own_error(match: re.Match[str]) -> str:
    return "" if match[1] in ("TrainingDiverged", "ConfigError") else f"{match[1]}: "
