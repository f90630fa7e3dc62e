"""Training throughput (slots/s, images/s) and peak memory of a named configuration.

    python benchmarks/train_throughput.py --preset cifar10_wrn16_2_cpu \
        --set data.name=imagefolder --set data.root=PATH/cifar10-jpg

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixmo_search.config import TrainConfig, resolve_config  # noqa: E402
from mixmo_search.train import EpochReport, train  # noqa: E402


def throughput_config(
    preset: str, overrides: list[str], *, steps: int, epochs: int, out_dir: str
) -> TrainConfig:
    """`preset` for `epochs` short epochs of `steps` steps, evaluated once after the last,
    then `overrides` (which may change any of that, e.g. `run.checkpoint=true`)."""
    return resolve_config(
        preset=preset,
        overrides=[
            f"optim.epochs={epochs}",
            f"run.max_steps_per_epoch={steps}",
            f"run.out_dir={out_dir}",
            "run.progress=false",
            "run.checkpoint=false",
            "run.eval_every=1000",  # evaluate only after the last epoch
            *overrides,
        ],
    )


def measure(
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[EpochReport], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train `cfg` with the real loop; per-epoch slots/s and train loss, peak memory.

    `peak_cuda_train_gib` is read after each epoch but the last (which also evaluates),
    so it is the training step's own peak; `peak_cuda_gib` includes the evaluation.
    """
    cuda = cfg.run.device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rates: list[float] = []
    losses: list[float] = []
    train_peak = 0.0

    def record(report: EpochReport) -> None:
        nonlocal train_peak
        rates.append(report.metrics["train/slots_per_s"])
        losses.append(report.metrics["train/loss"])
        if cuda and report.epoch < cfg.optim.epochs:
            train_peak = max(train_peak, torch.cuda.max_memory_allocated() / 2**30)
        if on_epoch is not None:
            on_epoch(report)

    started = time.perf_counter()
    final = train(cfg, on_epoch=record, resume=resume)
    result: dict[str, Any] = {
        "slots_per_s": rates,
        "train_loss": losses,
        "final": final,
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    if cuda:
        result["peak_cuda_train_gib"] = round(train_peak, 3)
        result["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cifar10_wrn16_2_cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=40, help="steps per measured epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs, the first is warm-up")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out_dir:
        cfg = throughput_config(
            args.preset, args.overrides, steps=args.steps, epochs=args.epochs, out_dir=out_dir
        )
        measured = measure(cfg)

    cuda = cfg.run.device != "cpu" and torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    steady = measured["slots_per_s"][1:]
    slots = statistics.median(steady)
    result = {
        "preset": args.preset,
        "overrides": args.overrides,
        "device": device,
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
        "peak_rss_gib": measured["peak_rss_gib"],
        "wall_s": measured["wall_s"],
    }
    if cuda:
        result["peak_cuda_gib"] = measured["peak_cuda_gib"]
        result["peak_cuda_train_gib"] = measured["peak_cuda_train_gib"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
