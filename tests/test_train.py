"""Real training runs on scikit-learn's digits: accuracy, metrics, resume, determinism."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mixmo_search.config import resolve_config
from mixmo_search.errors import ConfigError, TrainingDiverged
from mixmo_search.predictions import load_predictions
from mixmo_search.train import (
    DIVERGED_LOSS,
    DIVERGENCE_CHECK_STEPS,
    EpochReport,
    lr_at,
    main,
    train,
)

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


def test_digits_reaches_95_percent_with_two_members(quick_run):
    cfg, results, _ = quick_run
    assert results["test/acc"] >= 0.95
    assert min(results["test/acc_member0"], results["test/acc_member1"]) >= 0.9


def test_metrics_json_holds_every_metric(quick_run):
    cfg, results, _ = quick_run
    written = json.loads((Path(cfg.run.out_dir) / "metrics.json").read_text())
    for split in ("val", "test"):
        for name in METRICS:
            assert f"{split}/{name}" in written, f"{split}/{name}"
    assert written == pytest.approx(results)
    assert written["test/temperature"] == written["val/temperature"]  # fitted on val only
    assert written["val/nll_ts"] <= written["val/nll"] + 1e-9


def test_predictions_are_stored_per_split(quick_run):
    cfg, results, _ = quick_run
    for split, size in (("val", 300), ("test", 360)):
        preds = load_predictions(Path(cfg.run.out_dir) / "predictions" / f"{split}.npz")
        assert preds.member_logits.shape == (2, size, 10)
        acc = (preds.ensemble_logits.argmax(1) == preds.labels).mean()
        assert acc == pytest.approx(results[f"{split}/acc"], abs=1e-2)


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
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
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
        cmd + ["--set", "optim.lrr=1"], capture_output=True, text=True, timeout=300
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


def test_divergence_is_caught_within_a_check_interval(tmp_path):
    """A loss that blows up after a healthy start is caught, at the step it went bad."""
    cfg = _cfg(tmp_path, "optim.lr=1000", "optim.warmup_epochs=2", "optim.epochs=2")
    with pytest.raises(TrainingDiverged) as diverged:
        train(cfg)
    assert diverged.value.epoch == 1 and diverged.value.step > 1  # warm-up: a healthy start


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
