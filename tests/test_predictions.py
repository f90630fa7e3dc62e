from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mixmo_search.metrics import evaluate
from mixmo_search.predictions import Predictions, combine, load_predictions, save_predictions


def random_run(seed: int, n_members: int = 2, n: int = 50, k: int = 10):
    gen = torch.Generator().manual_seed(seed)
    member_logits = 4.0 * torch.randn(n_members, n, k, generator=gen)
    labels = torch.randint(0, k, (n,), generator=gen)
    return member_logits, labels


def test_round_trip_within_float16_tolerance(tmp_path):
    member_logits, labels = random_run(0)
    sample_ids = torch.arange(100, 150)
    path = save_predictions(
        tmp_path / "val.npz", member_logits, labels, split="val", sample_ids=sample_ids
    )
    preds = load_predictions(path)
    assert preds.split == "val"
    assert preds.n_members == 2
    assert preds.member_logits.dtype == np.float16
    np.testing.assert_allclose(preds.member_logits, member_logits.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(preds.labels, labels.numpy())
    np.testing.assert_array_equal(preds.sample_ids, sample_ids.numpy())
    stored_mean = member_logits.half().float().mean(0).numpy()
    np.testing.assert_allclose(preds.ensemble_logits, stored_mean, rtol=1e-6)
    assert preds.ensemble_logits.dtype == np.float32
    np.testing.assert_allclose(preds.ensemble_probs.sum(axis=1), 1.0, rtol=1e-5)


def test_compact_dtypes_and_default_sample_ids(tmp_path):
    member_logits, labels = random_run(1, n=300)
    preds = load_predictions(
        save_predictions(tmp_path / "t.npz", member_logits, labels, split="t")
    )
    assert preds.labels.dtype == np.uint8
    assert preds.sample_ids.dtype == np.uint16
    np.testing.assert_array_equal(preds.sample_ids, np.arange(300))


def test_huge_logits_saturate_instead_of_inf(tmp_path):
    member_logits = torch.tensor([[[1e6, -1e6]]])
    path = save_predictions(tmp_path / "p.npz", member_logits, torch.tensor([0]), split="val")
    assert np.isfinite(load_predictions(path).member_logits).all()


def test_atomic_write_leaves_no_temp_files(tmp_path):
    member_logits, labels = random_run(2)
    target = tmp_path / "nested" / "test.npz"
    save_predictions(target, member_logits, labels, split="test")
    save_predictions(target, member_logits, labels, split="test")  # overwrite in place
    assert [p.name for p in target.parent.iterdir()] == ["test.npz"]


def test_failed_write_keeps_old_file_and_leaves_no_temp_files(tmp_path, monkeypatch):
    member_logits, labels = random_run(3)
    target = tmp_path / "val.npz"
    save_predictions(target, member_logits, labels, split="val")
    before = target.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(OSError, match="disk full"):
        save_predictions(target, 2 * member_logits, labels, split="val")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["val.npz"]


def test_save_rejects_mismatched_shapes(tmp_path):
    member_logits, labels = random_run(4)
    with pytest.raises(ValueError, match="labels must have shape"):
        save_predictions(tmp_path / "x.npz", member_logits, labels[:-1], split="val")
    with pytest.raises(ValueError, match="sample_ids must have shape"):
        save_predictions(
            tmp_path / "x.npz", member_logits, labels, split="val", sample_ids=torch.arange(3)
        )
    assert not list(tmp_path.iterdir())


def test_load_rejects_foreign_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, member_logits=np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="missing labels, sample_ids, split"):
        load_predictions(path)


def test_combine_stacks_members_and_evaluates(tmp_path):
    logits_a, labels = random_run(5, n_members=2)
    logits_b, _ = random_run(6, n_members=1)
    a = load_predictions(save_predictions(tmp_path / "a.npz", logits_a, labels, split="test"))
    b = load_predictions(save_predictions(tmp_path / "b.npz", logits_b, labels, split="test"))
    combined = combine([a, b])
    assert combined.n_members == 3
    np.testing.assert_array_equal(combined.member_logits[2], b.member_logits[0])
    metrics = evaluate(
        torch.from_numpy(combined.member_logits), torch.from_numpy(combined.labels), prefix="test"
    )
    assert "test/acc_member2" in metrics


def test_combine_names_each_mismatch():
    logits = np.zeros((1, 4, 3), dtype=np.float16)
    base = Predictions(logits, np.array([0, 1, 2, 0]), np.arange(4), "val")
    cases = {
        "split mismatch": replace(base, split="test"),
        "sample_ids mismatch": replace(base, sample_ids=np.arange(1, 5)),
        "labels mismatch": replace(base, labels=np.array([1, 1, 2, 0])),
        "class count mismatch": replace(base, member_logits=np.zeros((1, 4, 5), np.float16)),
    }
    for message, other in cases.items():
        with pytest.raises(ValueError, match=message):
            combine([base, other])
    with pytest.raises(ValueError, match="empty list"):
        combine([])
