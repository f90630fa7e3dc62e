"""progress: the terminal's lines reach the user; each hook Ray Tune calls is one it has."""

from __future__ import annotations

import inspect

import pytest
from ray.tune import Callback
from ray.tune.experiment import Trial

from mixmo_search.search import progress
from mixmo_search.search.mlflow_callback import MlflowTrials
from mixmo_search.search.progress import ProgressLines
from mixmo_search.search.retention import CheckpointPruning
from mixmo_search.search.signals import HandOverSignals

HOOKS = {name for name, _ in inspect.getmembers(Callback, inspect.isfunction)
         if name.startswith("on_")}  # fmt: skip


@pytest.mark.parametrize("callback", [ProgressLines, MlflowTrials, CheckpointPruning,
                                      HandOverSignals])  # fmt: skip
def test_every_hook_a_callback_defines_is_one_ray_tune_calls(callback):
    """A misspelt hook is silently never called (ProgressLines.on_step was: no status line
    in a whole search)."""
    defined = {name for name in vars(callback) if name.startswith("on_")}
    assert defined <= HOOKS, defined - HOOKS


def test_the_status_line_comes_once_the_cadence_has_passed(tmp_path, capsys):
    lines = ProgressLines("val/acc", "max", {6}, 12, objectives=["val/acc"],
                          rungs=tmp_path / "scheduler.jsonl")  # fmt: skip
    running = Trial("train_trial", trial_id="abc", stub=True)
    running.set_status(Trial.RUNNING)
    lines.on_step_end(0, [running])
    assert "status:" not in capsys.readouterr().out  # not before the cadence
    lines.last_status -= progress.STATUS_EVERY_S
    lines.on_step_end(1, [running])
    assert "status: 1 running, 0 finished, 0 pruned, 0 failed" in capsys.readouterr().out
