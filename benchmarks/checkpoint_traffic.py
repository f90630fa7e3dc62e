"""Bytes a trial's checkpoints put on the search's storage, by `run.checkpoint_every`.

    python benchmarks/checkpoint_traffic.py --epochs 6 --every 1 3

For each cadence it runs one real trial of the search's trainable (`train_trial`) under Ray
Tune on a local Ray, with Tune's own checkpoint handling (`num_to_keep=1`, as a search), and
sums the bytes of every checkpoint Tune stored (read from the storage when Tune registers
it). The model is the reference WRN-28-10, M=2 (its weights do not depend on the data); the
data is digits with one step an epoch, so a CPU measures it in minutes. It prints the bytes
per checkpoint, per measured trial and, extrapolated, per trial of `--full-epochs` epochs.
Figures go to benchmarks/RESULTS.md by hand, with the machine, date and versions it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixmo_search.search import cluster  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each measured trial")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 3], help="cadences")
    parser.add_argument("--full-epochs", type=int, default=300, help="extrapolate to")
    parser.add_argument("--model", default="wrn28_10")
    args = parser.parse_args()

    cluster.use_local_ray_env()  # before ray is imported
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # no Tune boxes around the figures
    import ray
    import torch
    from ray import tune

    from mixmo_search.search.trainable import train_trial

    class StoredBytes(tune.Callback):
        """Sums the size of each checkpoint as Tune registers it on the storage."""

        def __init__(self) -> None:
            self.sizes: list[int] = []

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
            folder = Path(checkpoint.path)
            self.sizes.append(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()))

    cluster.start_local(cpus=2, gpus=0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="checkpoint-traffic-") as storage:
        for every in args.every:
            base = {
                "model.name": args.model, "optim.epochs": args.epochs, "optim.milestones": [],
                "run.max_steps_per_epoch": 1, "run.checkpoint_every": every,
                "run.device": "cpu", "run.threads": 2, "run.eval_batch_size": 100,
                "data.root": str(Path(storage) / "data"),
            }  # fmt: skip
            counter = StoredBytes()
            tuner = tune.Tuner(
                tune.with_resources(
                    tune.with_parameters(train_trial, preset="digits_quick", base=base),
                    {"cpu": 2},
                ),
                tune_config=tune.TuneConfig(num_samples=1),
                run_config=tune.RunConfig(
                    name=f"every-{every}",
                    storage_path=storage,
                    callbacks=[counter],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    verbose=0,
                ),  # fmt: skip
            )
            result = tuner.fit()[0]
            assert result.error is None, result.error
            handed = sum(
                1
                for e in range(1, args.full_epochs + 1)
                if e % every == 0 or e == args.full_epochs
            )
            per_checkpoint = max(counter.sizes)  # the last one also holds the predictions
            rows.append({
                "every": every, "epochs": args.epochs, "checkpoints": len(counter.sizes),
                "stored_bytes": sum(counter.sizes), "bytes_per_checkpoint": per_checkpoint,
                f"extrapolated_bytes_per_{args.full_epochs}_epoch_trial": handed * per_checkpoint,
            })  # fmt: skip
    ray.shutdown()
    print(json.dumps({"machine": platform.processor() or platform.machine(),
                      "python": platform.python_version(), "torch": torch.__version__,
                      "ray": ray.__version__, "model": f"{args.model} M=2",
                      "results": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
