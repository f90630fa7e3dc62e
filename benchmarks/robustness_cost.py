"""What scoring a trial under distribution shift costs (docs/method.md §Uncertainty).

    python benchmarks/robustness_cost.py [--preset digits_quick] [--repeats 3]
        [--corruptions all] [--ood sklearn-photos] [--set data.corruption_size=1000 ...]

It trains the preset once without shifts and times, on its kept network, one
`robustness.evaluate` of val and one of test (corrupted copies and the OOD set; the fastest
of --repeats interleaved rounds after a warm-up), and the training epochs themselves. A trial
then pays val + test once at the end with `run.robustness_every: 0` (the default), and val
again every k epochs with `run.robustness_every: k`. Reported as seconds and as a fraction of
the training time. Last result and machine: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from mixmo_search import robustness  # noqa: E402
from mixmo_search.config import resolve_config  # noqa: E402
from mixmo_search.datasets import load_dataset  # noqa: E402
from mixmo_search.inference import InputFormat, build_network, member_logits  # noqa: E402
from mixmo_search.train import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="digits_quick")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corruptions", default="all")
    parser.add_argument("--ood", default="sklearn-photos")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        base = [*args.overrides, f"run.out_dir={folder}/run", "run.progress=false"]
        cfg = resolve_config(preset=args.preset, overrides=base)
        results = train(cfg)
        shifted = resolve_config(
            preset=args.preset,
            overrides=[*base, f"data.corruptions={args.corruptions}", f"data.ood={args.ood}"],
        )
        state = torch.load(Path(folder) / "run" / "best.pt", weights_only=True)["model"]
    device = torch.device("cpu")
    ds = load_dataset(shifted.data)
    net = build_network(shifted, InputFormat.of(ds), state, device)
    shifts = robustness.prepare(shifted, ds, device)
    runs = {}
    for split in ("val", "test"):
        part = getattr(ds, split)
        clean = member_logits(net.model, part.images, net.normalize, cfg.run.eval_batch_size)
        runs[split] = lambda part=part, clean=clean, split=split: robustness.evaluate(
            net.model, net.normalize, shifts, split, part, clean,
            batch_size=cfg.run.eval_batch_size, precision="fp32",
        )  # fmt: skip
    seconds = _timed(runs, args.repeats)
    epochs, train_s = cfg.optim.epochs, results["train/seconds"]
    variants = len(shifts.families) * 5
    # machine-independent: images through the network (members share one pass) per epoch
    steps = len(ds.train) // cfg.unique_per_step
    if cfg.run.max_steps_per_epoch:
        steps = min(steps, cfg.run.max_steps_per_epoch)
    val_passes = len(shifts.subsets["val"]) * variants + len(shifts.ood.get("val", ()))
    report = {
        "preset": args.preset,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "families": list(shifts.families),
        "corrupted_images": {s: len(shifts.subsets[s]) * variants for s in ("val", "test")},
        "ood_images": {s: len(shifts.ood[s]) for s in shifts.ood},
        "train_slots_per_epoch": steps * cfg.optim.batch_size,  # forward + backward each
        "val_shift_forwards": val_passes,
        "train_seconds": round(train_s, 2),
        "epoch_seconds": round(train_s / epochs, 3),
        "val_shift_seconds": round(seconds["val"], 3),
        "test_shift_seconds": round(seconds["test"], 3),
        "end_only_fraction": round((seconds["val"] + seconds["test"]) / train_s, 4),
        "every_epoch_fraction": round(
            (seconds["val"] * (epochs + 1) + seconds["test"]) / train_s, 4
        ),
        "repeats": args.repeats,
    }
    print(json.dumps(report, indent=2))


def _timed(runs: dict, repeats: int) -> dict[str, float]:
    """The fastest of `repeats` rounds of each run, the runs interleaved in every round: on a
    shared machine the fastest round is the one least slowed by other jobs."""
    for run in runs.values():
        run()  # warm-up: allocations, first-call dispatch
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


if __name__ == "__main__":
    main()
