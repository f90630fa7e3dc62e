"""A trial's old checkpoints are deleted only once the search's saved state no longer names them.

Tune's own `CheckpointConfig(num_to_keep=K)` deletes a trial's oldest checkpoint as soon as it
registers a new one, while the experiment state saved on storage (what `--resume` restores)
names the checkpoint of the last save until the next one completes, up to ~10 s later and a
sync behind. A driver killed in between (SIGKILL, a lost head node) leaves a state naming a
checkpoint that is gone: the resumed trial cannot be restored ("Could not recover from
checkpoint as it does not exist on storage anymore"), fails its retries and ends failed. Here
Tune keeps every checkpoint, and `CheckpointPruning` deletes, at most once a minute while
trials hand checkpoints and once more when Tune ends, each trial's checkpoints older than the
one the saved state names, read back from storage with Ray Tune's `ExperimentAnalysis`.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

PRUNE_EVERY_S = 60.0
_INDEX = re.compile(r"^checkpoint_(\d+)$")  # Tune's names for a trial's checkpoint folders


class CheckpointPruning(Callback):
    """Deletes the checkpoints no saved state of the search in `folder` can need."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.last = time.monotonic()

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:  # fmt: skip
        if time.monotonic() - self.last >= PRUNE_EVERY_S:
            self.last = time.monotonic()
            prune(self.folder)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        prune(self.folder)  # Tune saved its state one last time before it ends


def prune(folder: Path) -> int:
    """Delete each trial's checkpoints older than the one the state saved in `folder` names;
    return how many. Nothing while that state cannot be read (being written, or none yet)."""
    from ray.tune import ExperimentAnalysis

    try:
        saved = ExperimentAnalysis(str(folder)).trials
    except Exception:  # noqa: BLE001 - a state being copied in: the next round reads it
        return 0
    removed = 0
    for trial in saved:
        named = trial.checkpoint
        if named is None or not trial.path:
            continue
        keep = _index(Path(named.path).name)
        for old in Path(trial.path).glob("checkpoint_*"):
            index = _index(old.name)
            if keep is not None and index is not None and index < keep:
                shutil.rmtree(old, ignore_errors=True)
                removed += 1
    return removed


def _index(name: str) -> int | None:
    match = _INDEX.match(name)
    return int(match[1]) if match else None
