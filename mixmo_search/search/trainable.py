"""The Ray Tune function trainable: one MixMo training per trial, one report per epoch.

Each epoch's metrics go to `ray.tune.report` with the trial's checkpoint folder (last.pt,
best.pt, and on the last epoch the predictions), so schedulers can stop a trial between
epochs and a failed or interrupted trial continues from its last epoch.

A trial whose training diverges fails at once and stays failed: Tune retries failed trials
(`FailureConfig`) from their last checkpoint, which would only diverge again, so the first
failure leaves a note in the trial's folder and every retry fails with its reason at once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mixmo_search.config import resolve_config
from mixmo_search.errors import TrainingDiverged
from mixmo_search.search.placement import place_trial
from mixmo_search.train import EpochReport, train

DIVERGED_NOTE = "diverged.json"


def train_trial(
    config: dict[str, Any],
    *,
    preset: str | None,
    base: dict[str, Any],
    simulated_gpus: bool = False,
) -> None:
    """Train `base` (flat overrides of `preset`) with the sampler's `config` on top, on the
    device of the GPUs Ray assigned the trial (see `placement`)."""
    from ray import tune

    trial_dir = Path(tune.get_context().get_trial_dir())
    note = trial_dir / DIVERGED_NOTE
    if note.exists():  # a retry of a diverged trial
        raise TrainingDiverged(**json.loads(note.read_text()))
    out_dir = trial_dir / "train"
    sampled = {k: v for k, v in config.items() if "." in k}  # config keys are section.key
    placement = place_trial(simulated=simulated_gpus)  # cuda only with a GPU from Ray
    cfg = resolve_config(
        preset=preset,
        overrides={**base, **sampled, "run.out_dir": str(out_dir), "run.progress": False,
                   "run.device": placement.device},
    )  # fmt: skip
    resume = False
    restored = tune.get_checkpoint()
    if restored is not None:  # a retry or a resumed search: continue from the last epoch
        with restored.as_directory() as folder:
            shutil.copytree(folder, out_dir, dirs_exist_ok=True)
        resume = (out_dir / "last.pt").exists()

    def report(epoch: EpochReport) -> None:
        checkpoint = tune.Checkpoint.from_directory(str(epoch.checkpoint_dir))
        tune.report(
            {**epoch.metrics, "epoch": epoch.epoch, **placement.report()}, checkpoint=checkpoint
        )

    try:
        train(cfg, on_epoch=report, resume=resume)
    except TrainingDiverged as err:
        note.write_text(
            json.dumps({"epoch": err.epoch, "step": err.step, "loss": err.loss, "lr": err.lr})
        )
        raise
