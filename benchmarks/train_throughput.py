"""Training throughput (slots/s, images/s) and peak memory of a named configuration.

    python benchmarks/train_throughput.py --preset cifar10_wrn16_2_cpu \
        --set data.name=imagefolder --set data.root=PATH/cifar10-jpg

It runs the real training loop (`mixmo_search.train.train`) for a few short epochs of
`--steps` steps each and reports the steady-state epochs (the first one warms up, and
compiles when `run.compile=true`). A slot is one sample through the shared core; each slot
carries M member images, so images/s = M x slots/s. Figures go to benchmarks/RESULTS.md by
hand, with the machine, date, torch version and n this prints.

`--bare` also times the network alone after every epoch: the same model, optimiser and batch
shape, forward + backward + SGD step on one fixed synthetic batch with cut masks, no data, no
mixing draws, plain cross-entropy. Alternating with the training epochs, both see the same
load on a shared machine; `full_over_bare` is the training loop's share of the bare speed.
The bare network adds its own memory (and its own copy of the data), so read peak RSS from
a run without `--bare`.
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mixmo_search.config import TrainConfig, resolve_config  # noqa: E402
from mixmo_search.datasets import load_dataset  # noqa: E402
from mixmo_search.inference import autocast, create_network, resolve_device  # noqa: E402
from mixmo_search.mixing import make_mix  # noqa: E402
from mixmo_search.train import EpochReport, make_optimizer, train  # noqa: E402


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


def bare_network_timer(cfg: TrainConfig) -> Callable[[int], float]:
    """`timer(steps)` -> slots/s of the model alone: forward, backward, SGD, fixed batch."""
    device = resolve_device(cfg.run.device)
    ds = load_dataset(cfg.data)  # for its shape only: classes, channels, image size
    m, batch = cfg.model.n_members, cfg.optim.batch_size
    model = create_network(
        cfg, num_classes=ds.num_classes, in_channels=ds.in_channels, device=device
    )
    opt = make_optimizer(model, cfg)
    step_model = torch.compile(model) if cfg.run.compile else model
    size = ds.image_size
    x = torch.randn(m, batch, ds.in_channels, size, size, device=device)
    y = torch.randint(0, ds.num_classes, (m, batch), device=device)
    masks = make_mix(
        "cut",
        n_members=m,
        batch=batch,
        size=(size // model.encoder_stride,) * 2,
        alpha=cfg.mixing.alpha,
        p=1.0,
        host_gen=torch.Generator().manual_seed(0),
        device=device,
    ).masks

    def timer(steps: int) -> float:
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            with autocast(device, cfg.run.precision):
                logits = step_model(x, masks)  # (M, B, K)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch / (time.perf_counter() - started)

    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cifar10_wrn16_2_cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=40, help="steps per measured epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs, the first is warm-up")
    parser.add_argument(
        "--bare", action="store_true", help="also time the network alone after each epoch"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out_dir:
        cfg = throughput_config(
            args.preset, args.overrides, steps=args.steps, epochs=args.epochs, out_dir=out_dir
        )
        bare_rates: list[float] = []
        bare_timer: list[Callable[[int], float]] = []

        def time_bare(report: EpochReport) -> None:
            if not bare_timer:
                bare_timer.append(bare_network_timer(cfg))
            bare_rates.append(bare_timer[0](args.steps))

        measured = measure(cfg, on_epoch=time_bare if args.bare else None)

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
    if args.bare:
        bare = statistics.median(bare_rates[1:])
        result["bare_slots_per_s_median"] = round(bare, 1)
        result["bare_slots_per_s_all"] = [round(r, 1) for r in bare_rates[1:]]
        # Per epoch pair, so a load change on a shared machine hits both sides alike.
        pairs = [full / bare for full, bare in zip(steady, bare_rates[1:], strict=True)]
        result["full_over_bare_median"] = round(statistics.median(pairs), 3)
    if cuda:
        result["peak_cuda_gib"] = measured["peak_cuda_gib"]
        result["peak_cuda_train_gib"] = measured["peak_cuda_train_gib"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
