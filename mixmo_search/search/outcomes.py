"""How a Tune trial ended, read the same way by every callback: finished, pruned or failed.

A trial that trained to its last epoch carries the final evaluation (`final/<metric>`) in its
last result; one stopped by the scheduler does not; a failed one has an error file whose last
line is the exception a user can act on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

FINAL_MARK = "final/val/acc"  # every finished trial reports it with its last epoch
# our exceptions whose message says it all (their class name adds nothing)
_SELF_EXPLAINING = ("TrainingDiverged", "ConfigError")


def finished(trial: Trial) -> bool:
    """Whether the trial trained to the end (else a scheduler stopped it: pruned)."""
    return FINAL_MARK in trial.last_result


def error_reason(trial: Trial) -> str:
    """The last line of the trial's error file, e.g. `diverged at epoch 1, step 3: ...`."""
    if not trial.error_file or not Path(trial.error_file).exists():
        return "unknown error (no error file)"
    lines = [line for line in Path(trial.error_file).read_text().splitlines() if line]
    reason = lines[-1] if lines else "unknown error"
    own = re.match(r"^mixmo_search[\w.]*\.(\w+): (.*)", reason)
    if own:
        return own[2] if own[1] in _SELF_EXPLAINING else f"{own[1]}: {own[2]}"
    return reason
