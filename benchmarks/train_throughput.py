"""Training throughput (slots/s, images/s) and peak memory of a named configuration.

    python benchmarks/train_throughput.py --preset cifar10_wrn16_2_cpu \
        --set data.name=imagefolder --set data.root=../shared/data/cifar10-jpg

It runs the real training loop (`mixmo_search.train.train`) for a few short epochs of
`--steps` steps each and reports the steady-state epochs (the first one warms up, and
compiles when `run.compile=true`). A slot is one sample through the shared core; each slot
carries M member images, so images/s = M x slots/s. Figures go to benchmarks/RESULTS.md by
hand, with the machine, date, torch version and n this prints.

`--bare` also times the network alone after every epoch: the same model, optimiser and batch
shape, forward + backward + SGD step on one fixed synthetic batch with cut masks, no data, no
mixing draws, plain cross-entropy. Alternating with the training epochs, both see the same
load on a shared machine; `full_over_bare` is the training loop's share of the bare speed.
The bare network adds its own memory, so read peak RSS from a run without `--bare`.
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

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mixmo_search.train as train_module  # noqa: E402
from mixmo_search.config import DataConfig, TrainConfig, resolve_config  # noqa: E402
from mixmo_search.datasets import Dataset, load_dataset  # noqa: E402
from mixmo_search.mixing import make_mix  # noqa: E402
from mixmo_search.models import create_model  # noqa: E402
from mixmo_search.train import EpochReport, resolve_device, train  # noqa: E402


def bare_network_timer(cfg: TrainConfig, ds: Dataset) -> Callable[[int], float]:
    """`timer(steps)` -> slots/s of the model alone: forward, backward, SGD, fixed batch."""
    device = resolve_device(cfg.run.device)
    m, batch = cfg.model.n_members, cfg.optim.batch_size
    model = create_model(
        cfg.model.name,
        n_members=m,
        num_classes=ds.num_classes,
        in_channels=ds.in_channels,
        stem_stride=cfg.model.stem_stride,
    ).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.base_lr,
        momentum=cfg.optim.momentum,
        nesterov=cfg.optim.nesterov,
        weight_decay=2 * cfg.optim.l2,
    )
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
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def timer(steps: int) -> float:
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            with autocast:
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
        bare_rates: list[float] = []
        loaded: list[Dataset] = []
        bare_timer: list[Callable[[int], float]] = []
        if args.bare:
            # Keep a handle on the data set train() loads (no second decode) to size the batch.
            def load_and_keep(data_cfg: DataConfig) -> Dataset:
                loaded.append(load_dataset(data_cfg))
                return loaded[-1]

            train_module.load_dataset = load_and_keep

        def record(report: EpochReport) -> None:
            rates.append(report.metrics["train/slots_per_s"])
            if args.bare:
                if not bare_timer:
                    bare_timer.append(bare_network_timer(cfg, loaded[-1]))
                bare_rates.append(bare_timer[0](args.steps))

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
    if args.bare:
        bare = statistics.median(bare_rates[1:])
        result["bare_slots_per_s_median"] = round(bare, 1)
        result["bare_slots_per_s_all"] = [round(r, 1) for r in bare_rates[1:]]
        # Per epoch pair, so a load change on a shared machine hits both sides alike.
        pairs = [full / bare for full, bare in zip(steady, bare_rates[1:], strict=True)]
        result["full_over_bare_median"] = round(statistics.median(pairs), 3)
    if cfg.run.device != "cpu" and torch.cuda.is_available():
        result["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
