"""How a trial ended, decided in one place: the Optuna searcher, MLflow, the progress lines,
the summary and the dashboard (through the MLflow `mixmo.status` tag) all ask `classify`.

- finished: it trained every epoch; its last result carries the final evaluation
  (`final/<objective>` for each objective, every one finite).
- pruned: the scheduler stopped it at a rung (`search.scheduler` records each such decision);
  nothing else is ever called pruned.
- failed: a deterministic error inside the trial (a bad configuration, a diverged loss), which
  the trainable reports at once as its last result under `FAILED`, or a crash that Tune's
  retries did not get past (its error file says why).
- interrupted: the search stopped while the trial ran (Ctrl-C, SIGTERM, a crash of the search);
  `--resume` continues it.
- out_of_time: the search's time budget ran out while the trial ran.

The last two are the search's doing, not the trial's: `classify` returns None for a trial that
did not end on its own, and the search names it by how it stopped (`stopped_by`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

FAILED = "mixmo/failed"  # result key: why the trial failed, in one line (see trainable)
EPOCH = "epoch"  # result key: the epochs a trial has completed
# our exceptions whose message says it all (their class name adds nothing)
_SELF_EXPLAINING = ("TrainingDiverged", "ConfigError", "DataError", "UserError")


class Outcome(StrEnum):
    """How a trial ended; the value is its MLflow `mixmo.status` tag."""

    FINISHED = "finished"
    PRUNED = "pruned"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    OUT_OF_TIME = "out_of_time"


@dataclass(frozen=True)
class Ending:
    outcome: Outcome
    epoch: int | None = None  # the last epoch it completed (pruned: the rung it stopped at)
    reason: str = ""  # why it failed, or how the search stopped it

    def run_name(self, trial_id: str) -> str:
        """Its MLflow run's name: a pruned trial says where (a KILLED run is otherwise
        ambiguous in the MLflow UI); every other trial is its id."""
        if self.outcome is Outcome.PRUNED:
            return f"{trial_id} (pruned at epoch {self.epoch})"
        return trial_id

    def describe(self) -> str:
        """The progress line's words, e.g. `pruned at epoch 4` or `failed: diverged at ...`."""
        at = f" at epoch {self.epoch}" if self.epoch else ""
        return {
            Outcome.FINISHED: "finished",
            Outcome.PRUNED: f"pruned{at} (stopped early by the scheduler)",
            Outcome.FAILED: f"failed: {self.reason}",
            Outcome.INTERRUPTED: f"interrupted{at}; --resume continues it",
            Outcome.OUT_OF_TIME: f"stopped{at} by the search's time budget",
        }[self.outcome]


def classify(
    result: Mapping[str, Any],
    *,
    objectives: Sequence[str],
    pruned_at: int | None = None,
    error: str | None = None,
    stopped_by: Outcome | None = None,
) -> Ending | None:
    """How the trial whose last result is `result` ended.

    `objectives`: the search's objective metrics (`val/acc`, ...); `pruned_at`: the rung at
    which the scheduler stopped it, if it did; `error`: why Tune gave up on it (a crash after
    its retries); `stopped_by`: INTERRUPTED or OUT_OF_TIME, when the search stopped and the
    trial had not ended. None: it has not ended (it runs, or waits for `--resume`).
    """
    epoch = _epoch(result)
    if error is not None:
        return Ending(Outcome.FAILED, epoch, error)
    if result.get(FAILED):
        return Ending(Outcome.FAILED, epoch, str(result[FAILED]))
    finals = {m: result.get(f"final/{m}") for m in objectives}
    if all(v is not None for v in finals.values()):
        bad = {m: v for m, v in finals.items() if not _finite(v)}
        if bad:
            shown = ", ".join(f"final {m} is {v}" for m, v in bad.items())
            return Ending(Outcome.FAILED, epoch, f"{shown}: a non-finite objective")
        return Ending(Outcome.FINISHED, epoch)
    if pruned_at is not None:
        return Ending(Outcome.PRUNED, pruned_at)
    if stopped_by is not None:
        return Ending(stopped_by, epoch)
    return None


def _epoch(result: Mapping[str, Any]) -> int | None:
    value = result.get(EPOCH)
    return int(value) if isinstance(value, int | float) and _finite(value) else None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def error_reason(trial: Trial) -> str:
    """Why Tune gave up on `trial`: the last line of its error file, e.g. `RuntimeError: ...`."""
    if not trial.error_file or not Path(trial.error_file).exists():
        return "unknown error (no error file)"
    lines = [line for line in Path(trial.error_file).read_text().splitlines() if line]
    reason = lines[-1] if lines else "unknown error"
    own = re.match(r"^mixmo_search[\w.]*\.(\w+): (.*)", reason)
    if own:
        return own[2] if own[1] in _SELF_EXPLAINING else f"{own[1]}: {own[2]}"
    return reason
