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

A deterministic error is no fault to retry: a configuration Tune would run again unchanged
(`UserError`: a bad combination of params, missing data) or a diverged loss
(`TrainingDiverged`) would only fail again. The trial reports it as its last result, its
reason in one line under `outcomes.FAILED`, and returns: Tune ends it at once, and
`outcomes.classify` calls it failed. Anything else (a crash, a lost node) raises, and Tune
retries the trial from its last checkpoint (`FailureConfig`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mixmo_search.config import ConfigBuilder, TrainConfig
from mixmo_search.errors import TrainingDiverged, UserError, one_line
from mixmo_search.search import outcomes
from mixmo_search.search.hold import maybe_hold
from mixmo_search.search.placement import place_trial
from mixmo_search.train import EpochReport, train

NODE_ID = "node_id"  # result key: the Ray node that trained this epoch
# result key of a trial's first report (after each start): the config it trains, flat, which
# its MLflow run logs as its params (built here, once, by the builder every check used)
TRIAL_CONFIG = "trial_config"
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

    out_dir = Path(tune.get_context().get_trial_dir()) / "train"
    sampled = {k: v for k, v in config.items() if "." in k}  # config keys are section.key
    placement = place_trial(simulated=simulated_gpus)  # cuda only with a GPU from Ray
    node_id = ray.get_runtime_context().get_node_id()
    reported: list[int] = []  # the epochs reported by this run of the trial

    def report(epoch: EpochReport) -> None:
        reported.append(epoch.epoch)
        metrics = {**epoch.metrics, "epoch": epoch.epoch, NODE_ID: node_id}
        if len(reported) == 1:  # the config as trained, once each run of the trial
            metrics[TRIAL_CONFIG] = cfg.flat()
        if not hands_checkpoint(epoch.epoch, cfg):
            tune.report(metrics)
        else:
            metrics[CHECKPOINT_BYTES] = float(folder_bytes(epoch.checkpoint_dir))
            checkpoint = tune.Checkpoint.from_directory(str(epoch.checkpoint_dir))
            tune.report({**metrics, **placement.report()}, checkpoint=checkpoint)
        maybe_hold(epoch.epoch, tune.get_context().get_trial_id())  # fault tests only

    try:
        cfg = configs.build(
            {**sampled, "run.out_dir": str(out_dir), "run.progress": False,
             "run.device": placement.device}
        )  # fmt: skip
        results = train(cfg, on_epoch=report, resume=_restore(out_dir))
    except (UserError, TrainingDiverged) as err:  # deterministic: see the module docstring
        last = reported[-1] if reported else 0
        tune.report({outcomes.FAILED: one_line(str(err)), "epoch": last, NODE_ID: node_id})
        return
    if not reported:  # restored from the last epoch's checkpoint: say how it ended again
        final = {f"final/{k}": v for k, v in results.items() if k.startswith(("val/", "test/"))}
        epochs = cfg.optim.epochs
        tune.report({**final, "best_epoch": results["best_epoch"], "epoch": epochs,
                     NODE_ID: node_id, TRIAL_CONFIG: cfg.flat()})  # fmt: skip


def _restore(out_dir: Path) -> bool:
    """Make `out_dir` hold exactly the checkpoint Tune restores the trial from (a retry or a
    resumed search), or nothing; whether there is one to continue from. What an attempt Tune
    does not know of left there (a killed driver's, a crashed retry's) goes."""
    from ray import tune

    shutil.rmtree(out_dir, ignore_errors=True)
    restored = tune.get_checkpoint()
    if restored is None:
        return False
    with restored.as_directory() as folder:
        shutil.copytree(folder, out_dir)
    return (out_dir / "last.pt").exists()
