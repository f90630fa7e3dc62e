"""A training under distribution shift (mixmo_search/robustness.py): the metrics it reports, when,
and the artifacts they can be recomputed from; the published corrupted test files' reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mixmo_search.config import resolve_config
from mixmo_search.corruption_files import BENCHMARK_CORRUPTIONS, corrupted_test, corruption_folder
from mixmo_search.datasets import load_dataset
from mixmo_search.errors import ConfigError, DataError
from mixmo_search.metrics import ROBUSTNESS_METRICS, topk_accuracy
from mixmo_search.predictions import load_predictions
from mixmo_search.robustness import prepare
from mixmo_search.train import train
from mixmo_search.uncertainty import ood_metrics

SHIFTED = {
    "data.ood": "sklearn-photos", "data.corruptions": "gaussian_noise,contrast",
    "data.corruption_size": 120, "run.robustness_every": 2, "optim.epochs": 4,
    "optim.milestones": [3], "run.max_steps_per_epoch": 10, "run.progress": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def shifted_run(tmp_path_factory):
    """A short digits training with an OOD set and two generated corruptions."""
    out_dir = tmp_path_factory.mktemp("shifted") / "run"
    cfg = resolve_config(preset="digits_quick", overrides={**SHIFTED, "run.out_dir": str(out_dir)})
    reports = []
    results = train(cfg, on_epoch=reports.append)
    return cfg, results, reports, out_dir / "predictions"


def test_every_robustness_metric_is_reported_on_val_and_test(shifted_run):
    _, results, _, _ = shifted_run
    for split in ("val", "test"):
        for name in ROBUSTNESS_METRICS:
            assert np.isfinite(results[f"{split}/{name}"]), f"{split}/{name}"
    assert 0 <= results["val/corrupt_acc"] <= 1 and results["val/corrupt_nll"] > 0


def test_val_is_scored_under_shift_every_robustness_every_epochs(shifted_run):
    _, _, reports, _ = shifted_run
    shifted = [r.epoch for r in reports if "val/corrupt_acc" in r.metrics]
    assert shifted == [2, 4]
    assert all("val/ood_auroc_msp" in r.metrics for r in reports if r.epoch in shifted)
    # the cost a config fixes comes with every validation: an objective a search can minimise
    assert (
        len({r.metrics["cost/flops"] for r in reports}) == 1
        and reports[0].metrics["cost/params"] > 0
    )
    last = reports[-1].metrics  # the final report carries the kept epoch's, as final/
    assert "final/val/corrupt_acc" in last and "final/test/ood_fpr95_mi" in last


def test_the_corruption_table_and_predictions_hold_the_metrics(shifted_run):
    _, results, _, folder = shifted_run
    for split in ("val", "test"):
        table = json.loads((folder / f"{split}_corruptions.json").read_text())
        assert table["images"] == 120 and table["source"] == "generated"
        assert [(r["corruption"], r["severity"]) for r in table["rows"]] == [
            (f, s) for f in ("gaussian_noise", "contrast") for s in range(1, 6)
        ]
        mean_acc = np.mean([r["acc"] for r in table["rows"]])
        assert results[f"{split}/corrupt_acc"] == pytest.approx(mean_acc)
        assert results[f"{split}/corrupt_rel_acc"] == pytest.approx(mean_acc / table["clean_acc"])
        stored = load_predictions(folder / f"{split}_corrupted.npz")
        logits = torch.from_numpy(stored.member_logits[0].astype(np.float32)).view(10, 120, -1)
        labels = torch.from_numpy(stored.labels.astype(np.int64)).view(10, 120)
        for row, variant, truth in zip(table["rows"], logits, labels, strict=True):
            assert topk_accuracy(variant, truth, 1) == pytest.approx(row["acc"], abs=1 / 120)


def test_the_ood_metrics_follow_from_the_stored_predictions(shifted_run):
    _, results, _, folder = shifted_run
    for split in ("val", "test"):
        clean, ood = (load_predictions(folder / f"{name}.npz") for name in (split, f"{split}_ood"))
        assert ood.n_members == clean.n_members == 2 and set(ood.labels.tolist()) == {-1}
        found = ood_metrics(torch.from_numpy(clean.member_logits.astype(np.float32)),
                            torch.from_numpy(ood.member_logits.astype(np.float32)))  # fmt: skip
        for name, value in found.items():  # stored as float16: ties may move a little
            assert results[f"{split}/{name}"] == pytest.approx(value, abs=0.02), name


def test_families_digits_cannot_take_are_refused_when_named_and_skipped_by_all():
    cfg = resolve_config(preset="digits_quick", overrides={"data.corruptions": "saturate"})
    ds = load_dataset(cfg.data)
    with pytest.raises(ConfigError, match="saturate"):
        prepare(cfg, ds, torch.device("cpu"))
    every = resolve_config(preset="digits_quick", overrides={"data.corruptions": "all"})
    assert prepare(every, ds, torch.device("cpu")).families == (
        "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur",
        "defocus_blur", "brightness", "contrast", "jpeg",
    )  # fmt: skip
    assert prepare(resolve_config(preset="digits_quick"), ds, torch.device("cpu")) is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.ood": "mnist"}, "`data.ood` must be empty"),
        ({"data.ood": "imagefolder:"}, "needs a folder"),
        ({"data.corruptions": "gaussian_noise,fog"}, "unknown families fog"),
        ({"data.corruptions_test": "cifar10-c"}, "data.corruptions` is empty"),
        (
            {"data.corruptions": "all", "data.corruptions_test": "cifar10-c"},
            "corrupts the cifar10",
        ),
        ({"data.corruptions_test": "imagenet-c"}, "must be one of"),
        ({"run.robustness_every": -1}, "must be >= 0"),
    ],
)
def test_bad_uncertainty_settings_are_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(preset="digits_quick", overrides=overrides)


def _fake_release(folder, labels: np.ndarray) -> np.ndarray:
    """A folder in the CIFAR-10-C layout for a test split of `labels`: images hold the
    corruption index, the severity and the image index, to check what is read where."""
    folder.mkdir()
    np.save(folder / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    n = len(labels)
    for c, name in enumerate(BENCHMARK_CORRUPTIONS):
        images = np.zeros((5 * n, 32, 32, 3), np.uint8)
        images[..., 0] = c
        images[..., 1] = np.repeat(np.arange(1, 6), n)[:, None, None]
        images[..., 2] = np.tile(np.arange(n), 5)[:, None, None]
        np.save(folder / f"{name}.npy", images)
    return labels


def test_published_corrupted_files_are_read_by_corruption_severity_and_image(tmp_path):
    labels = _fake_release(tmp_path / "CIFAR-10-C", np.arange(20) % 10)
    folder = corruption_folder("cifar10-c", tmp_path, download=False)
    subset = torch.tensor([3, 7, 19])
    read = list(corrupted_test(folder, subset, torch.from_numpy(labels)))
    assert [(c, s) for c, s, _ in read] == [
        (c, s) for c in BENCHMARK_CORRUPTIONS for s in range(1, 6)
    ]
    for c, (_, severity, images) in zip(np.repeat(np.arange(15), 5), read, strict=True):
        assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8
        assert images[:, 0].unique().tolist() == [c]
        assert images[:, 1].unique().tolist() == [severity]
        assert images[:, 2, 0, 0].tolist() == [3, 7, 19]
    with pytest.raises(DataError, match="does not match the test split"):
        next(corrupted_test(folder, subset, torch.from_numpy((labels + 1) % 10)))


def test_missing_or_incomplete_published_files_are_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="data.download` is false"):
        corruption_folder("cifar100-c", tmp_path, download=False)
    _fake_release(tmp_path / "CIFAR-10-C", np.arange(5))
    (tmp_path / "CIFAR-10-C" / "fog.npy").unlink()
    with pytest.raises(DataError, match="lacks fog.npy"):
        corruption_folder("cifar10-c", tmp_path, download=False)
