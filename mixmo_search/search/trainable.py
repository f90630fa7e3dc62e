"""The Ray Tune function trainable: one MixMo training per trial, one report per epoch.

Each epoch's metrics go to `ray.tune.report`, with the Ray node the trial runs on
(`node_id`), so schedulers can stop a trial between epochs. Every `run.checkpoint_every`
epochs, and at the last epoch, the report also hands Tune the trial's checkpoint folder
(last.pt, best.pt, and on the last epoch the predictions), which Tune copies to the search's
storage: a failed or interrupted trial continues from there, on any node, and the copied
size goes into the result as `checkpoint/bytes`. Handing a checkpoint every epoch would copy
a WRN-28-10's ~440 MB to shared storage each epoch; the cadence trades that traffic against
the epochs a retry trains again (resume stays exact: last.pt holds the RNG state, and best.pt
is the one of the same epoch).

A trial whose training diverges fails at once and stays failed: Tune retries failed trials
(`FailureConfig`) from their last checkpoint, which would only diverge again, so the first
failure leaves a note in the trial's folder and every retry fails with its reason at once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mixmo_search.config import ConfigBuilder, TrainConfig
from mixmo_search.errors import TrainingDiverged
from mixmo_search.search.placement import place_trial
from mixmo_search.train import EpochReport, train

DIVERGED_NOTE = "diverged.json"
NODE_ID = "node_id"  # result key: the Ray node that trained this epoch
CHECKPOINT_BYTES = "checkpoint/bytes"  # result key: the size of the checkpoint handed to Tune


def hands_checkpoint(epoch: int, cfg: TrainConfig) -> bool:
    """Whether the report of 1-based `epoch` carries a checkpoint: every
    `run.checkpoint_every` epochs and the last one (its best.pt and predictions are the
    trial's artifacts)."""
    return epoch % cfg.run.checkpoint_every == 0 or epoch == cfg.optim.epochs


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def train_trial(
    config: dict[str, Any], *, configs: ConfigBuilder, simulated_gpus: bool = False
) -> None:
    """Train the config `configs` builds with the sampler's values (`config`) on top, on the
    device of the GPUs Ray assigned the trial (see `placement`)."""
    import ray
    from ray import tune

    trial_dir = Path(tune.get_context().get_trial_dir())
    note = trial_dir / DIVERGED_NOTE
    if note.exists():  # a retry of a diverged trial
        raise TrainingDiverged(**json.loads(note.read_text()))
    out_dir = trial_dir / "train"
    sampled = {k: v for k, v in config.items() if "." in k}  # config keys are section.key
    placement = place_trial(simulated=simulated_gpus)  # cuda only with a GPU from Ray
    cfg = configs.build(
        {**sampled, "run.out_dir": str(out_dir), "run.progress": False,
         "run.device": placement.device}
    )  # fmt: skip
    resume = False
    restored = tune.get_checkpoint()
    if restored is not None:  # a retry or a resumed search: continue from the last epoch
        with restored.as_directory() as folder:
            shutil.copytree(folder, out_dir, dirs_exist_ok=True)
        resume = (out_dir / "last.pt").exists()
    node_id = ray.get_runtime_context().get_node_id()
    reported = 0

    def report(epoch: EpochReport) -> None:
        nonlocal reported
        reported += 1
        metrics = {**epoch.metrics, "epoch": epoch.epoch, NODE_ID: node_id}
        if not hands_checkpoint(epoch.epoch, cfg):
            tune.report(metrics)
            return
        metrics[CHECKPOINT_BYTES] = float(folder_bytes(epoch.checkpoint_dir))
        checkpoint = tune.Checkpoint.from_directory(str(epoch.checkpoint_dir))
        tune.report({**metrics, **placement.report()}, checkpoint=checkpoint)

    try:
        results = train(cfg, on_epoch=report, resume=resume)
    except TrainingDiverged as err:
        note.write_text(
            json.dumps({"epoch": err.epoch, "step": err.step, "loss": err.loss, "lr": err.lr})
        )
        raise
    if not reported:  # restored from the last epoch's checkpoint: say how it ended again
        final = {f"final/{k}": v for k, v in results.items() if k.startswith(("val/", "test/"))}
        epochs = cfg.optim.epochs
        tune.report({**final, "best_epoch": results["best_epoch"], "epoch": epochs,
                     NODE_ID: node_id})  # fmt: skip
