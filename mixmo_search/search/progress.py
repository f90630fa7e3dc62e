"""What the terminal shows while a search runs: one line per trial event, and a status line.

Instead of Ray Tune's boxes (`--verbose` brings them back): a line when a trial starts (with
its params), at each epoch where the scheduler decides (asha's rungs; quarters of training
without asha), when it ends as `outcomes.classify` says (finished, pruned by the scheduler,
failed with the reason; a trial the search stopped gets its line from `run`, `say_ended`);
and, at most once a minute while trials run, the counts and the best trial so far.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from mixmo_search.search import outcomes
from mixmo_search.search.optuna_search import OPTUNA_TRIAL
from mixmo_search.search.outcomes import Ending, Outcome
from mixmo_search.search.scheduler import RungRecord, rung_milestones

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

STATUS_EVERY_S = 60.0
ENDED = (Outcome.FINISHED, Outcome.PRUNED, Outcome.FAILED)  # how trials end during a search


class ProgressLines(Callback):
    """Prints trial events as single lines (see the module docstring)."""

    def __init__(
        self, metric: str, mode: str, report_epochs: set[int], epochs: int, *,
        objectives: list[str], rungs: Path,
    ) -> None:  # fmt: skip
        self.metric, self.mode = metric, mode
        self.objectives, self.rungs = objectives, rungs  # the scheduler's decisions
        self.report_epochs, self.epochs = report_epochs, epochs
        self.best: tuple[float, str] | None = None
        self.ended: dict[str, Outcome] = {}
        self.started: set[str] = set()
        self.last_status = time.monotonic()

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        if trial.trial_id in self.started:  # Tune retries a failed trial (FailureConfig)
            _say(f"trial {trial.trial_id} retried after a failure")
            return
        self.started.add(trial.trial_id)
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.config.items() if "." in k)
        number = trial.config.get(OPTUNA_TRIAL)
        _say(f"trial {trial.trial_id} started" + (f" (optuna #{number})" if number is not None
                                                  else "") + f": {params}")  # fmt: skip

    def on_trial_restore(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        epoch = trial.last_result.get("epoch", 0)
        _say(f"trial {trial.trial_id} continues from its checkpoint (epoch {epoch})")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Trial, result: dict, **info: Any
    ) -> None:
        epoch = int(result.get("epoch", 0))
        if epoch in self.report_epochs and epoch < self.epochs:
            shown = _shown(result, self.metric)
            _say(f"trial {trial.trial_id} epoch {epoch}/{self.epochs}: {shown}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        pruned_at = RungRecord.load(self.rungs).stopped_at(trial.trial_id)
        ending = outcomes.classify(trial.last_result, objectives=self.objectives,
                                   pruned_at=pruned_at)  # fmt: skip
        if ending is not None:  # else the search stopped it, and `run` says so
            self._ended(trial, ending)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: Any) -> None:
        error = outcomes.error_reason(trial)
        self._ended(trial, outcomes.classify(trial.last_result, objectives=self.objectives,
                                             error=error))  # fmt: skip

    def _ended(self, trial: Trial, ending: Ending) -> None:
        self.ended[trial.trial_id] = ending.outcome
        result = trial.last_result
        if ending.outcome is Outcome.PRUNED:
            say_ended(trial.trial_id, ending, f": {_shown(result, self.metric)}")
        elif ending.outcome is Outcome.FINISHED:
            final = float(result.get(f"final/{self.metric}", math.nan))
            sign = 1 if self.mode == "max" else -1
            if self.best is None or sign * final > sign * self.best[0]:
                self.best = (final, trial.trial_id)
            epochs = f"best epoch {int(result.get('best_epoch', 0))} of {ending.epoch}"
            say_ended(trial.trial_id, ending, f": {self.metric} {final:.4f} ({epochs})")
        else:
            say_ended(trial.trial_id, ending)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        running = sum(t.status == "RUNNING" for t in trials)
        if not running or now - self.last_status < STATUS_EVERY_S:
            return
        self.last_status = now
        ended = list(self.ended.values())
        counts = ", ".join(f"{ended.count(s)} {s}" for s in ENDED)
        best = f"; best {self.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else ""
        _say(f"status: {running} running, {counts}{best}")


def report_epochs(scheduler: str, grace: int, factor: float, max_t: int) -> set[int]:
    """Epochs worth a line: where asha judges (its rungs), else each quarter of training."""
    if scheduler == "asha":
        return {math.ceil(m) for m in rung_milestones(grace, factor, max_t)}
    return {max(1, math.ceil(max_t * q / 4)) for q in (1, 2, 3)}


def say_ended(trial_id: str, ending: Ending, detail: str = "") -> None:
    """The line of a trial's end, e.g. `trial 1a2b pruned at epoch 4 (...): val/acc 0.81`."""
    _say(f"trial {trial_id} {ending.describe()}{detail}")


def _shown(result: dict[str, Any], metric: str) -> str:
    value = result.get(metric)
    return f"{metric} {value:.4f}" if isinstance(value, float | int) else f"{metric} n/a"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
