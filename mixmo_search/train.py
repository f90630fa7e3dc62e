"""Train one MixMo configuration, top to bottom.

    python -m mixmo_search.train --preset digits_quick
    python -m mixmo_search.train --config my.yaml --set optim.epochs=10 --set mixing.p=0.7

`train(cfg)` runs setup -> data -> model -> optimizer -> resume -> compile -> epochs (lr,
steps, validation, checkpoint, `on_epoch`) -> final evaluation of the best validation epoch
on val and test. It returns the metrics and writes them, the predictions and checkpoints
under `cfg.run.out_dir`. Selection uses the validation split only; test only reports.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from mixmo_search import checkpoint, files, preflight, robustness
from mixmo_search.config import TrainConfig, list_presets, load_config, resolve_config
from mixmo_search.cost import count_params, forward_flops, inference_cost
from mixmo_search.data import Normalizer, epoch_indices
from mixmo_search.datasets import Dataset, DatasetShape, load_dataset
from mixmo_search.errors import ConfigError, Parser, TrainingDiverged, exit_on_user_error
from mixmo_search.inference import (
    autocast,
    create_network,
    evaluate_split,
    member_logits,
    resolve_device,
)
from mixmo_search.metrics import evaluate
from mixmo_search.mixing import p_at
from mixmo_search.models import MixMoNet
from mixmo_search.predictions import save_predictions
from mixmo_search.step import make_batch, mixmo_loss

UNFITTED = ("/nll_ts", "/ece_ts", "/temperature")  # need a validation split to fit T on
DIVERGED_LOSS = 1e4  # a weighted cross-entropy this large means the logits blew up
DIVERGENCE_CHECK_STEPS = 20  # steps between divergence checks (each is one host sync)


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based, completed epochs
    metrics: dict[str, float]  # train/*, val/*, lr, p
    checkpoint_dir: Path  # holds last.pt (resume) and best.pt after this epoch


def lr_at(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over `warmup_epochs`, then x gamma at each 1-based milestone epoch."""
    optim = cfg.optim
    warmup_steps = optim.warmup_epochs * steps_per_epoch
    done = epoch * steps_per_epoch + step + 1
    warm = min(1.0, done / warmup_steps) if warmup_steps > 0 else 1.0
    decays = sum(epoch + 1 >= milestone for milestone in optim.milestones)
    return cfg.base_lr * warm * optim.gamma**decays


def make_optimizer(model: MixMoNet, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD as the recipe says. The reference adds l2 * sum(theta^2) to the loss; its gradient
    2 * l2 * theta is exactly SGD's weight_decay = 2 * l2, which costs nothing extra per step;
    recipes that use SGD's own weight decay (Tiny ImageNet) add it."""
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.base_lr,
        momentum=cfg.optim.momentum,
        nesterov=cfg.optim.nesterov,
        weight_decay=2 * cfg.optim.l2 + cfg.optim.weight_decay,
    )


def train(
    cfg: TrainConfig,
    *,
    on_epoch: Callable[[EpochReport], None] | None = None,
    resume: bool = False,
) -> dict[str, float]:
    """Train `cfg` and return the best validation epoch's val and test metrics."""
    # setup: device, threads, seeds, output folder
    device = resolve_device(cfg.run.device)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    torch.manual_seed(cfg.run.seed)
    host_gen = torch.Generator().manual_seed(cfg.run.seed)  # per-batch mixing choices
    torch.backends.cudnn.benchmark = True
    out_dir = Path(cfg.run.out_dir or time.strftime("runs/%Y%m%d-%H%M%S"))
    last_path, best_path = out_dir / checkpoint.LAST, out_dir / checkpoint.BEST
    if last_path.exists() and not resume:
        raise ConfigError(
            f"{out_dir} already holds a checkpoint; pass --resume to continue it or choose "
            "another `run.out_dir`"
        )
    if resume and not last_path.exists():
        raise ConfigError(
            f"nothing to resume: {last_path} does not exist; check `run.out_dir`, or drop "
            "--resume to start a new training there"
        )
    _check_writable(out_dir)  # before the data loads: a typo should not wait for it

    # data: the whole set as uint8 tensors on the device; the paper protocol holds nothing out
    holdout = cfg.run.protocol == "holdout"
    ds = load_dataset(cfg.data, hold_out=holdout)
    shape = DatasetShape(cfg.data.name, len(ds.train) + len(ds.val), len(ds.val), len(ds.test),
                         ds.num_classes, ds.in_channels, ds.image_size, ds.image_size)  # fmt: skip
    footprint = preflight.check_config(cfg, shape)  # the network at these shapes, on meta
    memory = preflight.device_memory(device)
    preflight.check_fits(footprint, cfg.optim.batch_size, memory,
                         f"the {memory / 2**30:.1f} GiB of {device}")  # fmt: skip
    ds = ds.to(device)
    normalize = Normalizer(ds.mean, ds.std, device)
    shifts = robustness.prepare(cfg, ds, device)  # OOD and corrupted images, if asked for
    n_members, slots = cfg.model.n_members, cfg.optim.batch_size
    steps_per_epoch = len(ds.train) // cfg.unique_per_step
    if cfg.run.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.run.max_steps_per_epoch)

    # model: M encoders -> mix -> shared core -> M heads
    model = create_network(
        cfg, num_classes=ds.num_classes, in_channels=ds.in_channels, device=device
    )
    mask_size = (ds.image_size // model.encoder_stride,) * 2
    opt = make_optimizer(model, cfg)

    # the inference cost a config fixes (cost/params, cost/flops), reported with each
    # validation so a search may minimise it; images/s is measured once, at the end
    fixed_cost = _fixed_cost(model, normalize, ds.test.images[:1])

    # resume from last.pt, checking it was written for the same training
    start_epoch, best_acc, best_epoch = 0, -1.0, 0
    if resume:
        state = checkpoint.load(last_path, device, keys=checkpoint.LAST_KEYS)
        _check_same_training(state["config"], cfg)
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            checkpoint.set_rng_state(state["rng"], host_gen)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise checkpoint.CheckpointError(
                f"{last_path} does not fit this network ({str(err).splitlines()[0][:160]}); "
                "move it aside, or choose another run.out_dir"
            ) from None
        start_epoch, best_acc, best_epoch = state["epoch"], state["best_acc"], state["best_epoch"]

    # compile the training forward (one fixed shape); evaluation stays eager
    step_model = torch.compile(model, mode=cfg.run.compile_mode) if cfg.run.compile else model

    mixing, optim = cfg.mixing, cfg.optim
    started = time.perf_counter()
    train_seconds = 0.0
    final: dict[str, float] | None = None
    for epoch in range(start_epoch, optim.epochs):
        p_t = p_at(epoch, optim.epochs, mixing.p, mixing.p_decay_start)
        indices = epoch_indices(
            len(ds.train),
            batch_size=slots,
            batch_repeat=optim.batch_repeat,
            n_members=n_members,
            input_repeat=optim.input_repeat,
            device=device,
        )[:steps_per_epoch]  # (S, M, B)
        model.train()
        loss_sum = torch.zeros((), device=device)
        train_acc_sum = torch.zeros((), device=device)
        binary_steps = 0
        # first step whose loss was non-finite or above DIVERGED_LOSS (-1: none), and its loss;
        # kept on the device and read every DIVERGENCE_CHECK_STEPS steps
        bad_step = torch.full((), -1, dtype=torch.long, device=device)
        bad_loss = torch.zeros((), device=device)
        epoch_start = time.perf_counter()
        bar = _progress(indices, cfg, f"epoch {epoch + 1}/{optim.epochs}")
        for step, idx in enumerate(bar):
            lr = lr_at(cfg, epoch, step, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            batch = make_batch(
                ds.train, idx, cfg, p=p_t, normalize=normalize, mask_size=mask_size,
                host_gen=host_gen,
            )  # fmt: skip
            with autocast(device, cfg.run.precision):
                logits = step_model(batch.images, batch.mix.masks)  # (M, B, K)
            loss = mixmo_loss(logits, batch, mixing.reweight_r)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            train_acc_sum += (logits.detach().argmax(-1) == batch.labels).float().mean()
            binary_steps += batch.mix.binary  # decided on the host: no sync
            first_bad = (bad_step < 0) & ~(torch.isfinite(loss) & (loss < DIVERGED_LOSS))
            bad_step = torch.where(first_bad, step, bad_step)
            bad_loss = torch.where(first_bad, loss.detach(), bad_loss)
            if (step + 1) % DIVERGENCE_CHECK_STEPS == 0 and bad_step >= 0:  # host sync, 1/20
                _diverged(epoch, bad_step, bad_loss, cfg, steps_per_epoch)
            if cfg.run.progress and step % 25 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.4f}")  # host sync, 1/25
        if bad_step >= 0:  # before anything of this epoch is evaluated or saved
            _diverged(epoch, bad_step, bad_loss, cfg, steps_per_epoch)
        epoch_loss = loss_sum.item() / steps_per_epoch  # host sync: once an epoch
        epoch_seconds = time.perf_counter() - epoch_start
        train_seconds += epoch_seconds
        metrics = {
            "train/loss": epoch_loss,
            "train/acc": train_acc_sum.item() / steps_per_epoch,
            "train/slots_per_s": steps_per_epoch * slots / epoch_seconds,
            "train/binary_frac": binary_steps / steps_per_epoch,  # follows p (§Training step 4)
            "lr": lr,
            "p": p_t,
        }

        # validation, best checkpoint (the paper protocol keeps the last epoch), last, callback
        is_last = epoch + 1 == optim.epochs
        if not holdout and is_last:
            best_epoch = epoch + 1
            checkpoint.save(best_path, {"model": model.state_dict(), "epoch": best_epoch})
        elif holdout and ((epoch + 1) % cfg.run.eval_every == 0 or is_last):
            val_logits = member_logits(
                model,
                ds.val.images,
                normalize,
                cfg.run.eval_batch_size,
                precision=cfg.run.precision,
            )
            metrics.update(evaluate(val_logits, ds.val.labels, prefix="val"), **fixed_cost)
            if shifts and cfg.run.robustness_every and (epoch + 1) % cfg.run.robustness_every == 0:
                shifted = robustness.evaluate(
                    model, normalize, shifts, "val", ds.val, val_logits,
                    batch_size=cfg.run.eval_batch_size, precision=cfg.run.precision,
                )  # fmt: skip
                metrics.update(shifted.metrics)
            if metrics["val/acc"] > best_acc and math.isfinite(metrics["val/nll"]):
                best_acc, best_epoch = metrics["val/acc"], epoch + 1
                checkpoint.save(best_path, {"model": model.state_dict(), "epoch": best_epoch})
        if cfg.run.checkpoint or is_last:
            checkpoint.save(
                last_path,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "rng": checkpoint.rng_state(host_gen),
                    "epoch": epoch + 1,
                    "best_acc": best_acc,
                    "best_epoch": best_epoch,
                    "config": cfg.to_dict(),
                    "code_revision": checkpoint.code_revision(),
                },
            )
        if cfg.run.progress:
            shown = ", ".join(
                f"{k} {metrics[k]:.4f}" for k in ("train/loss", "val/acc") if k in metrics
            )
            print(f"epoch {epoch + 1}/{optim.epochs}: {shown}", flush=True)
        if is_last:  # evaluate before the last report: a scheduler may stop us right after it
            final = _evaluate_best(model, ds, normalize, cfg, out_dir, shifts)
            metrics.update({f"final/{k}": v for k, v in final.items()})
            metrics["best_epoch"] = float(best_epoch)
        if on_epoch is not None:
            on_epoch(EpochReport(epoch=epoch + 1, metrics=metrics, checkpoint_dir=out_dir))

    if final is None:  # resumed a run whose epochs were all done
        final = _evaluate_best(model, ds, normalize, cfg, out_dir, shifts)
    results = {
        **final,
        "best_epoch": float(best_epoch),
        "epochs": float(optim.epochs),
        "train/images": float(len(ds.train)),  # 45k on CIFAR with holdout, 50k with paper
        "train/seconds": train_seconds,
        "train/slots_per_s": steps_per_epoch
        * slots
        * (optim.epochs - start_epoch)
        / max(train_seconds, 1e-9),
        "wall_seconds": time.perf_counter() - started,
    }
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    if cfg.run.progress:
        print(f"metrics.json, predictions/ and checkpoints written to {out_dir}", flush=True)
    return results


def _evaluate_best(
    model: MixMoNet,
    ds: Dataset,
    normalize: Normalizer,
    cfg: TrainConfig,
    out_dir: Path,
    shifts: robustness.Shifts | None,
) -> dict[str, float]:
    """The kept epoch (best on val; the last one under the paper protocol) on val, which fits
    the temperature, and test, which reuses it; each also under `shifts` (corruptions, OOD
    images). With no validation split there is no honest temperature, so the
    temperature-scaled metrics are left out."""
    model.load_state_dict(
        checkpoint.load(out_dir / checkpoint.BEST, ds.train.images.device)["model"]
    )
    final: dict[str, float] = {}
    for split in ("val", "test") if len(ds.val) else ("test",):
        part = getattr(ds, split)
        temperature = final.get("val/temperature", 1.0) if split == "test" else None
        metrics, logits = evaluate_split(
            model, part, normalize, prefix=split, batch_size=cfg.run.eval_batch_size,
            precision=cfg.run.precision, temperature=temperature,
        )  # fmt: skip
        if not len(ds.val):
            metrics = {k: v for k, v in metrics.items() if not k.endswith(UNFITTED)}
        final.update(metrics)
        save_predictions(
            out_dir / "predictions" / f"{split}.npz", logits, part.labels, split=split
        )
        if shifts is not None:
            shifted = robustness.evaluate(
                model, normalize, shifts, split, part, logits,
                batch_size=cfg.run.eval_batch_size, precision=cfg.run.precision,
            )  # fmt: skip
            final.update(shifted.metrics)
            robustness.save(shifted, out_dir / "predictions")
    # inference cost (cost/*) of the test-time pass, on one evaluation batch of this device
    forward = partial(
        member_logits, model, normalize=normalize, batch_size=cfg.run.eval_batch_size,
        precision=cfg.run.precision,
    )  # fmt: skip
    final.update(inference_cost(model, forward, ds.test.images[: cfg.run.eval_batch_size]))
    return final


def _fixed_cost(model: MixMoNet, normalize: Normalizer, image: Tensor) -> dict[str, float]:
    forward = partial(member_logits, model, normalize=normalize, batch_size=1)
    return {
        "cost/params": float(count_params(model)),
        "cost/flops": float(forward_flops(forward, image)),
    }


def _diverged(
    epoch: int, bad_step: Tensor, bad_loss: Tensor, cfg: TrainConfig, steps_per_epoch: int
) -> None:
    step = int(bad_step)
    lr = lr_at(cfg, epoch, step, steps_per_epoch)
    raise TrainingDiverged(epoch + 1, step + 1, float(bad_loss), lr)


def _check_writable(out_dir: Path) -> None:
    reason = files.unwritable(out_dir)
    if reason:
        raise ConfigError(
            f"`run.out_dir` {out_dir} cannot be written: {reason}; choose another with "
            "--set run.out_dir=PATH"
        )


def _progress(indices: Tensor, cfg: TrainConfig, desc: str):
    if not cfg.run.progress:
        return indices
    from tqdm.auto import tqdm

    # disable=None: a bar on a terminal, nothing in logs (the per-epoch line remains)
    return tqdm(indices, desc=desc, leave=False, dynamic_ncols=True, disable=None)


def _check_same_training(saved: dict, cfg: TrainConfig) -> None:
    """Refuse to resume a checkpoint written for a different training (run.* may differ)."""
    current = cfg.to_dict()
    diffs = [
        f"{section}.{key}: {saved[section].get(key)!r} -> {value!r}"
        for section, values in current.items()
        if section != "run"
        for key, value in values.items()
        if _normal(saved.get(section, {}).get(key)) != _normal(value)
    ]
    if diffs:
        raise ConfigError(
            "the checkpoint in `run.out_dir` was written for another config ("
            + "; ".join(diffs)
            + "); resume with the same config or choose another run.out_dir"
        )


def _normal(value: object) -> object:
    return list(value) if isinstance(value, tuple | list) else value


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        prog="python -m mixmo_search.train", description="Train one MixMo configuration."
    )
    parser.add_argument("--config", help="YAML file: `preset: NAME` plus sections to change")
    parser.add_argument("--preset", help=f"start from a preset: {', '.join(list_presets())}")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one key, e.g. --set optim.epochs=10 (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue run.out_dir/last.pt")
    args = parser.parse_args(argv)
    if args.config and args.preset:
        parser.error("give --config or --preset, not both")
    if args.config:
        cfg = load_config(args.config, args.overrides)
    else:
        cfg = resolve_config(preset=args.preset or "digits_quick", overrides=args.overrides)
    results = train(cfg, resume=args.resume)
    print(summary_lines(results, cfg))


def summary_lines(results: dict[str, float], cfg: TrainConfig) -> str:
    """What a person reads at the end of a training; every figure is in metrics.json."""
    splits = [s for s in ("val", "test") if f"{s}/acc" in results]
    lines = [
        f"kept epoch {int(results['best_epoch'])} of {int(results['epochs'])} "
        f"({'best on validation' if cfg.run.protocol == 'holdout' else 'the last'}); "
        f"{results['train/seconds']:.0f} s of training at {results['train/slots_per_s']:.0f} "
        "slots/s",
        *(f"  {split}: acc {results[f'{split}/acc']:.4f}, nll {results[f'{split}/nll']:.4f}, "
          f"ece {results[f'{split}/ece']:.4f}" for split in splits),
        f"every metric: {Path(cfg.run.out_dir or '.') / 'metrics.json'}",
    ]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
