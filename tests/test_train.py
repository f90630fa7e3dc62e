"""Real training runs on scikit-learn's digits: accuracy, metrics, resume, determinism."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from mixmo_search import checkpoint
from mixmo_search import train as train_module
from mixmo_search.config import list_presets, published, resolve_config
from mixmo_search.data import Normalizer
from mixmo_search.datasets import load_dataset
from mixmo_search.errors import ConfigError, TrainingDiverged
from mixmo_search.inference import create_network, evaluate_split, member_logits
from mixmo_search.predictions import load_predictions
from mixmo_search.step import mixmo_loss
from mixmo_search.train import (
    DIVERGED_LOSS,
    DIVERGENCE_CHECK_STEPS,
    EpochReport,
    lr_at,
    main,
    make_optimizer,
    train,
)
from tests.waiting import scaled

METRICS = (
    "acc",
    "top5",
    "nll",
    "ece",
    "brier",
    "nll_ts",
    "ece_ts",
    "temperature",
    "acc_member0",
    "acc_member1",
    "member_acc_mean",
    "ratio_error",
    "disagreement",
)


def _cfg(tmp_path, *overrides: str, name: str = "run"):
    return resolve_config(
        preset="digits_quick",
        overrides=[f"run.out_dir={tmp_path / name}", "run.progress=false", *overrides],
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The digits_quick preset as shipped: M=2 Cut-MixMo, the README's first command."""
    out = tmp_path_factory.mktemp("quick")
    reports: list[EpochReport] = []
    cfg = _cfg(out)
    return cfg, train(cfg, on_epoch=reports.append), reports


@pytest.mark.slow
def test_digits_reaches_95_percent_with_two_members(quick_run):
    cfg, results, _ = quick_run
    assert results["test/acc"] >= 0.95
    assert min(results["test/acc_member0"], results["test/acc_member1"]) >= 0.9


@pytest.mark.slow
def test_metrics_json_holds_every_metric(quick_run):
    cfg, results, _ = quick_run
    written = json.loads((Path(cfg.run.out_dir) / "metrics.json").read_text())
    for split in ("val", "test"):
        for name in METRICS:
            assert f"{split}/{name}" in written, f"{split}/{name}"
    assert written == pytest.approx(results)
    assert written["test/temperature"] == written["val/temperature"]  # fitted on val only
    assert written["val/nll_ts"] <= written["val/nll"] + 1e-9


@pytest.mark.slow
def test_predictions_are_stored_per_split(quick_run):
    cfg, results, _ = quick_run
    for split, size in (("val", 300), ("test", 360)):
        preds = load_predictions(Path(cfg.run.out_dir) / "predictions" / f"{split}.npz")
        assert preds.member_logits.shape == (2, size, 10)
        acc = (preds.ensemble_logits.argmax(1) == preds.labels).mean()
        assert acc == pytest.approx(results[f"{split}/acc"], abs=1e-2)


@pytest.mark.slow
def test_on_epoch_reports_every_epoch_with_a_checkpoint(quick_run):
    cfg, _, reports = quick_run
    assert [r.epoch for r in reports] == list(range(1, cfg.optim.epochs + 1))
    assert all("val/acc" in r.metrics and "train/loss" in r.metrics for r in reports)
    assert (reports[-1].checkpoint_dir / "last.pt").exists()
    # the last report carries the final evaluation, so a scheduler stopping the trial
    # right after it cannot lose it
    assert reports[-1].metrics["final/test/acc"] == pytest.approx(quick_run[1]["test/acc"])
    assert all("final/val/acc" not in r.metrics for r in reports[:-1])
    p_values = [r.metrics["p"] for r in reports]
    assert p_values[0] == 0.5 and p_values[-1] == 0.0


def test_resume_continues_bit_for_bit(tmp_path):
    overrides = ("optim.epochs=3", "model.name=wrn10_1", "run.max_steps_per_epoch=6")
    straight = train(_cfg(tmp_path, *overrides, name="straight"))

    class Interrupt(Exception):
        pass

    def stop_after_two(report: EpochReport) -> None:
        if report.epoch == 2:
            raise Interrupt

    cfg = _cfg(tmp_path, *overrides, name="resumed")
    with pytest.raises(Interrupt):
        train(cfg, on_epoch=stop_after_two)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg)
    resumed = train(cfg, resume=True)
    for key in ("val/acc", "val/nll", "test/acc", "test/nll", "test/disagreement"):
        assert resumed[key] == straight[key], key


def test_resume_refuses_another_config(tmp_path):
    cfg = _cfg(tmp_path, "optim.epochs=1", "run.max_steps_per_epoch=2")
    train(cfg)
    other = _cfg(tmp_path, "optim.epochs=1", "run.max_steps_per_epoch=2", "mixing.p=0.9")
    with pytest.raises(ConfigError, match="mixing.p"):
        train(other, resume=True)


@pytest.mark.parametrize(
    "overrides",
    [
        ("model.n_members=3",),
        ("mixing.block=cow", "mixing.input_mix=cutmix"),
        ("mixing.block=patchup", "mixing.input_mix=mixup"),
        ("mixing.block=sum", "optim.input_repeat=0.5"),
        ("model.n_members=1", "optim.batch_repeat=1"),
    ],
)
def test_variants_train(tmp_path, overrides):
    cfg = _cfg(tmp_path, "optim.epochs=1", "run.max_steps_per_epoch=4", *overrides)
    results = train(cfg)
    assert 0.0 <= results["val/acc"] <= 1.0
    assert torch.isfinite(torch.tensor(results["val/nll"]))
    m = cfg.model.n_members
    assert f"val/acc_member{m - 1}" in results and f"val/acc_member{m}" not in results


def test_lr_follows_unique_images_warmup_and_milestones():
    cfg = resolve_config(preset="cifar100_cut_mixmo")
    assert cfg.base_lr == pytest.approx(0.0125)  # 0.1 * (64 / 4) / 128, the reference value
    steps = 100
    assert lr_at(cfg, 0, 0, steps) == pytest.approx(0.0125 / 100)
    assert lr_at(cfg, 0, 99, steps) == pytest.approx(0.0125)
    assert lr_at(cfg, 99, 5, steps) == pytest.approx(0.0125)
    assert lr_at(cfg, 100, 5, steps) == pytest.approx(0.00125)  # epoch 101 (1-based)
    assert lr_at(cfg, 225, 5, steps) == pytest.approx(0.0125e-3)


# docs/method.md §Recipes: what each reference recipe's SGD must be, written out by hand
RECIPE_SGD = {
    "cifar": {"momentum": 0.9, "nesterov": True, "weight_decay": 6e-4},  # 2 x the loss's 3e-4
    "tinyimagenet": {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},  # SGD's own
}
RECIPE_LR = {"cifar": lambda b: 0.1 * (64 / b) / 128, "tinyimagenet": lambda b: 0.2 / b}


@pytest.mark.parametrize("preset", [p for p in list_presets() if published(p) is not None])
def test_the_optimiser_is_the_recipe_exactly(preset):
    cfg = resolve_config(preset=preset)
    family = "tinyimagenet" if preset.startswith("tinyimagenet") else "cifar"
    with torch.device("meta"):  # the recipe's network, shapes only: no weights drawn
        model = create_network(cfg, num_classes=10, in_channels=3, device="meta")
    opt = make_optimizer(model, cfg)
    assert type(opt) is torch.optim.SGD and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters()}
    for key, value in RECIPE_SGD[family].items():
        assert group[key] == pytest.approx(value, rel=1e-12, abs=0), (preset, key)
    assert group["dampening"] == 0
    assert group["lr"] == pytest.approx(RECIPE_LR[family](cfg.optim.batch_repeat), rel=1e-12)


def test_sgd_weight_decay_is_the_gradient_of_the_recipes_l2_term():
    """Two steps of the trainer's SGD on a loss equal plain SGD (no decay, same momentum) on
    loss + l2 * sum(theta^2), the reference's regulariser (docs/method.md §Training step 9)."""
    cfg = resolve_config(preset="cifar100_cut_mixmo",
                         overrides={"optim.l2": 0.05, "model.name": "wrn10_1"})  # fmt: skip
    torch.manual_seed(0)
    ours = create_network(cfg, num_classes=10, in_channels=3)
    theirs = create_network(cfg, num_classes=10, in_channels=3)
    theirs.load_state_dict(ours.state_dict())
    optimizers = (
        (ours, make_optimizer(ours, cfg), 0.0),
        (theirs, torch.optim.SGD(theirs.parameters(), lr=cfg.base_lr, momentum=0.9,
                                 nesterov=True), cfg.optim.l2),
    )  # fmt: skip
    images = torch.randn(4, 3, 32, 32)
    for _ in range(2):  # the second step also goes through the momentum buffers
        for net, opt, l2 in optimizers:
            penalty = sum(p.square().sum() for p in net.parameters())
            loss = net(images).square().mean() + l2 * penalty
            opt.zero_grad()
            loss.backward()
            opt.step()
    for mine, reference in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_cli_writes_metrics_and_rejects_bad_keys(tmp_path):
    out = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "mixmo_search.train",
        "--preset",
        "digits_quick",
        "--set",
        f"run.out_dir={out}",
        "--set",
        "optim.epochs=1",
        "--set",
        "run.max_steps_per_epoch=2",
        "--set",
        "run.progress=false",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(300))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1
    # a short summary for a person, its figures those of metrics.json
    last = done.stdout.strip().splitlines()[-4:]
    assert last[0].startswith("kept epoch 1 of 1 (best on validation)"), done.stdout
    assert (
        last[2] == f"  test: acc {metrics['test/acc']:.4f}, nll {metrics['test/nll']:.4f}, "
        f"ece {metrics['test/ece']:.4f}"
    )
    assert last[3] == f"every metric: {out / 'metrics.json'}"
    bad = subprocess.run(
        cmd + ["--set", "optim.lrr=1"], capture_output=True, text=True, timeout=scaled(300)
    )
    assert bad.returncode == 2
    assert "optim.lrr" in bad.stderr and "allowed keys" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_diverging_loss_stops_the_run_at_once_and_keeps_nothing(tmp_path):
    cfg = _cfg(tmp_path, "optim.lr=100000", "optim.epochs=2")
    with pytest.raises(TrainingDiverged) as diverged:
        train(cfg)
    err = diverged.value
    assert err.epoch == 1 and 1 <= err.step <= DIVERGENCE_CHECK_STEPS
    assert not math.isfinite(err.loss) or err.loss > DIVERGED_LOSS
    assert f"diverged at epoch 1, step {err.step}" in str(err) and "optim.lr" in str(err)
    out = Path(cfg.run.out_dir)  # no checkpoint, prediction or metrics of the broken weights
    assert not out.exists() or not any(out.rglob("*.pt")) and not (out / "metrics.json").exists()


@pytest.mark.slow
def test_divergence_is_caught_within_a_check_interval(tmp_path):
    """A loss that blows up after a healthy start is caught, at the step it went bad."""
    cfg = _cfg(tmp_path, "optim.lr=1000", "optim.warmup_epochs=2", "optim.epochs=2")
    with pytest.raises(TrainingDiverged) as diverged:
        train(cfg)
    assert diverged.value.epoch == 1 and diverged.value.step > 1  # warm-up: a healthy start


def _digits_folder(root: Path, test_labels: np.ndarray | None = None) -> tuple[Path, Tensor]:
    """scikit-learn's digits as an image folder (train/<class>/, test/<class>/): every fifth
    image is a test image, filed under `test_labels` when given. Returns the folder and the
    test images as the loader decodes them, (N, 3, 8, 8) uint8."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype(np.uint8)  # (1797, 8, 8)
    test_index = np.arange(0, len(pixels), 5)
    labels = digits.target.copy()
    if test_labels is not None:
        labels[test_index] = test_labels
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / ("test" if i % 5 == 0 else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    return root, torch.from_numpy(pixels[test_index])[:, None].expand(-1, 3, -1, -1)


def _evaluated(cfg, weights: dict, ds, split: str, temperature: float | None = None) -> dict:
    network = create_network(cfg, num_classes=ds.num_classes, in_channels=ds.in_channels)
    network.load_state_dict(weights)
    normalize = Normalizer(ds.mean, ds.std, "cpu")
    metrics, _ = evaluate_split(
        network, getattr(ds, split), normalize, prefix=split,
        batch_size=cfg.run.eval_batch_size, temperature=temperature,
    )  # fmt: skip
    return metrics


@pytest.mark.slow
def test_the_kept_epoch_is_the_best_on_validation_when_test_prefers_another(tmp_path):
    """Selection reads validation only. The test images are filed under what the network
    predicts after one epoch, so test prefers epoch 1 while validation prefers a later one:
    the kept epoch is validation's best, its test metrics are reported, and each epoch's
    `val/*` is that epoch's network on the validation split."""
    steps = ("run.max_steps_per_epoch=10", "optim.milestones=[]", "data.name=imagefolder")
    truth, test_images = _digits_folder(tmp_path / "truth")
    first = _cfg(tmp_path, *steps, f"data.root={truth}", "optim.epochs=1", name="first")
    train(first)
    ds = load_dataset(first.data)
    network = create_network(first, num_classes=10, in_channels=3)
    network.load_state_dict(checkpoint.load(Path(first.run.out_dir) / "best.pt")["model"])
    logits = member_logits(network, test_images, Normalizer(ds.mean, ds.std, "cpu"), 1000)
    folder, _ = _digits_folder(tmp_path / "epoch1", logits.mean(0).argmax(1).numpy())

    cfg = _cfg(tmp_path, *steps, f"data.root={folder}", "optim.epochs=3", name="kept")
    reports: list[EpochReport] = []
    weights: list[dict] = []

    def keep(report: EpochReport) -> None:
        reports.append(report)
        weights.append(checkpoint.load(report.checkpoint_dir / "last.pt")["model"])

    results = train(cfg, on_epoch=keep)
    ds = load_dataset(cfg.data)
    val = [_evaluated(cfg, w, ds, "val") for w in weights]
    test = [_evaluated(cfg, w, ds, "test", temperature=v["val/temperature"])
            for w, v in zip(weights, val, strict=True)]  # fmt: skip
    val_acc = [v["val/acc"] for v in val]
    assert [r.metrics["val/acc"] for r in reports] == val_acc  # each epoch, the real val split
    best = int(np.argmax(val_acc))  # the first best epoch
    assert test[0]["test/acc"] == 1.0 and best > 0, (val_acc, test)  # they prefer different
    assert results["best_epoch"] == best + 1
    assert results["test/acc"] < 1.0
    # the kept epoch's val metrics (T fitted there) and test metrics at val's T, every one
    assert {k: results[k] for k in (*val[best], *test[best])} == {**val[best], **test[best]}


def test_the_final_metrics_are_the_kept_checkpoints_on_val_then_test(tmp_path):
    """`best.pt` (not `last.pt`) is evaluated on val, which fits T, then on test at val's T."""
    cfg = _cfg(tmp_path)
    out = Path(cfg.run.out_dir)
    ds = load_dataset(cfg.data)
    networks = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        networks.append(create_network(cfg, num_classes=10, in_channels=1).state_dict())
    checkpoint.save(out / checkpoint.BEST, {"model": networks[0], "epoch": 1})
    checkpoint.save(out / checkpoint.LAST, {"model": networks[1], "epoch": 2})
    model = create_network(cfg, num_classes=10, in_channels=1)
    normalize = Normalizer(ds.mean, ds.std, "cpu")
    final = train_module._evaluate_best(model, ds, normalize, cfg, out, shifts=None)
    val = _evaluated(cfg, networks[0], ds, "val")
    test = _evaluated(cfg, networks[0], ds, "test", temperature=val["val/temperature"])
    assert {k: v for k, v in final.items() if not k.startswith("cost/")} == {**val, **test}


def _loss_plus(monkeypatch, added: float, *, at_call: int) -> None:
    """The trainer's loss, with `added` added at its `at_call`-th step (0-based) only: the
    weights and gradients stay healthy, so that step's loss value alone is bad."""
    calls = iter(range(1_000_000))

    def loss(logits, batch, reweight_r):
        real = mixmo_loss(logits, batch, reweight_r)
        return real + added if next(calls) == at_call else real

    monkeypatch.setattr(train_module, "mixmo_loss", loss)


BOUND = 1e4  # the README's promise: a loss of 10^4 or more has diverged


@pytest.mark.parametrize(
    ("added", "caught"),
    [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "inf"), (BOUND, "bound")],
)
def test_nan_alone_inf_alone_and_the_bound_each_stop_the_run(tmp_path, monkeypatch, added,
                                                             caught):  # fmt: skip
    """Each kind of bad loss is caught on its own, at the step it happened, within an epoch
    shorter than the check interval (the end-of-epoch check)."""
    _loss_plus(monkeypatch, added, at_call=6)  # epoch 2, step 3 (1-based)
    cfg = _cfg(tmp_path, "optim.epochs=2", "run.max_steps_per_epoch=4")
    with pytest.raises(TrainingDiverged) as diverged:
        train(cfg)
    err = diverged.value
    assert (err.epoch, err.step) == (2, 3)
    if caught == "nan":
        assert math.isnan(err.loss)
    elif caught == "inf":
        assert err.loss == added
    else:
        assert BOUND < err.loss < BOUND + 10
    assert checkpoint.load(Path(cfg.run.out_dir) / "last.pt")["epoch"] == 1  # epoch 2: nothing
    assert not (Path(cfg.run.out_dir) / "metrics.json").exists()


def test_a_loss_just_below_the_bound_is_no_divergence(tmp_path, monkeypatch):
    _loss_plus(monkeypatch, BOUND - 10, at_call=2)  # about 9,992: large, not diverged
    results = train(_cfg(tmp_path, "optim.epochs=1", "run.max_steps_per_epoch=4"))
    assert math.isfinite(results["test/nll"])


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (["--set", "optim.lr=100000"], 1, "training diverged at epoch 1, step"),
        (["--config", "{tmp}"], 2, "is a folder, not a file"),
        (["--set", "run.out_dir=/proc/nope"], 2, "`run.out_dir` /proc/nope cannot be written"),
        (["--set", "run.out_dir={tmp}/empty", "--resume"], 2, "nothing to resume"),
        # found by a hostile check (issue 17): accepted, then a traceback or nonsense
        (["--set", "model.stem_stride=4"], 2, "cannot train on the 8x8 images of digits"),
        (["--set", "model.stem_stride=3"], 2, "the stem stride must divide the image size"),
        (["--set", "optim.momentum=0"], 2, "`optim.nesterov` needs `optim.momentum` > 0"),
        (["--set", "run.seed=1e30"], 2, "`run.seed` must be in [0, 4294967295]"),
        (["--set", "data.split_seed=1e30"], 2, "`data.split_seed` must be in"),
        (["--set", "optim.lr=["], 2, "not valid YAML"),
        (["--set", "mixing.alpha=.nan"], 2, "`mixing.alpha` must be a finite number"),
        (["--set", "mixing.alpha=.inf"], 2, "`mixing.alpha` must be a finite number"),
        (["--set", "data.val_size=100000"], 2, "must be smaller than the 1437 training images"),
        # 1,437 training images less the 300 held out for validation
        (
            ["--set", "optim.batch_size=1200", "--set", "optim.batch_repeat=1"],
            2,
            "1200 unique images a step exceeds the 1137 training images of digits",
        ),
        (
            ["--set", "optim.batch_size=20000", "--set", "optim.batch_repeat=1"],
            2,
            "unique images a step exceeds",
        ),
        (["--set", "data.crop_padding=9"], 2, "`data.crop_padding` (9) is larger than"),
        (["--set", "run.out_dir={tmp}/garbage", "--resume"], 2, "is not a checkpoint"),
    ],
)
def test_cli_failures_are_one_line_and_non_zero(tmp_path, argv, code, expected):
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "last.pt").write_bytes(b"not a checkpoint")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if not any(a.startswith("run.out_dir") for a in argv):
        argv += ["--set", f"run.out_dir={tmp_path / 'out'}"]
    if "--config" not in argv:
        argv += ["--preset", "digits_quick"]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        main(["--set", "run.progress=false", "--set", "optim.epochs=2", *argv])
    err = stderr.getvalue()
    assert exited.value.code == code, err[-2000:]
    assert err.strip().startswith("error: ") and expected in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "last.pt").exists()


@pytest.mark.slow
def test_the_paper_protocol_trains_on_everything_and_reports_the_last_epoch(tmp_path):
    holdout = _cfg(tmp_path, "optim.epochs=2", name="holdout")
    paper = _cfg(tmp_path, "optim.epochs=2", "run.protocol=paper", name="paper")
    reports: list[EpochReport] = []
    results = train(paper, on_epoch=reports.append)
    assert results["train/images"] == 1437  # all of digits' training split
    assert train(holdout)["train/images"] == 1437 - holdout.data.val_size
    assert results["best_epoch"] == 2  # the last epoch, chosen by nothing
    assert "test/acc" in results and not any(k.startswith("val/") for k in results)
    assert not any(k.endswith(("_ts", "temperature")) for k in results)  # no T without val
    assert not any(k.startswith("val/") for r in reports for k in r.metrics)
    out = Path(paper.run.out_dir)
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["test.npz"]
    saved = load_predictions(out / "predictions" / "test.npz")
    acc = (saved.ensemble_logits.argmax(1) == saved.labels).mean()
    assert acc == pytest.approx(results["test/acc"], abs=1 / 360)
