"""Training throughput (slots/s, images/s) and peak memory of a named configuration.

    python benchmarks/train_throughput.py --preset cifar10_wrn16_2_cpu \
        --set data.name=imagefolder --set data.root=../shared/data/cifar10-jpg

It runs the real training loop (`mixmo_search.train.train`) for a few short epochs of
`--steps` steps each and reports the steady-state epochs (the first one warms up, and
compiles when `run.compile=true`). A slot is one sample through the shared core; each slot
carries M member images, so images/s = M x slots/s. Figures go to benchmarks/RESULTS.md by
hand, with the machine, date, torch version and n this prints.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixmo_search.config import resolve_config  # noqa: E402
from mixmo_search.train import EpochReport, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cifar10_wrn16_2_cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=40, help="steps per measured epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs, the first is warm-up")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out_dir:
        cfg = resolve_config(
            preset=args.preset,
            overrides=[
                *args.overrides,
                f"optim.epochs={args.epochs}",
                f"run.max_steps_per_epoch={args.steps}",
                f"run.out_dir={out_dir}",
                "run.progress=false",
                "run.checkpoint=false",
                "run.eval_every=1000",  # evaluate only after the last epoch
            ],
        )
        if cfg.run.device != "cpu" and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        rates: list[float] = []

        def record(report: EpochReport) -> None:
            rates.append(report.metrics["train/slots_per_s"])

        started = time.perf_counter()
        train(cfg, on_epoch=record)
        wall = time.perf_counter() - started

    steady = rates[1:]
    slots = statistics.median(steady)
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result = {
        "preset": args.preset,
        "overrides": args.overrides,
        "device": torch.cuda.get_device_name()
        if cfg.run.device != "cpu" and torch.cuda.is_available()
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "batch_slots": cfg.optim.batch_size,
        "n_members": cfg.model.n_members,
        "n_epochs_measured": len(steady),
        "steps_per_epoch": args.steps,
        "slots_per_s_median": round(slots, 1),
        "slots_per_s_all": [round(r, 1) for r in steady],
        "images_per_s_median": round(slots * cfg.model.n_members, 1),
        "peak_rss_gib": round(peak_rss_gib, 3),
        "wall_s": round(wall, 1),
    }
    if cfg.run.device != "cpu" and torch.cuda.is_available():
        result["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
