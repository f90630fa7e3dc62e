"""Batch repetition, member shuffles, input repetition and on-device augmentation."""

from __future__ import annotations

import itertools

import pytest
import torch

from mixmo_search.data import Normalizer, augmented, crop_flip, epoch_indices

CPU = torch.device("cpu")


def _indices(n=1024, batch=64, b=4, members=2, rho=0.0):
    torch.manual_seed(0)
    return epoch_indices(
        n, batch_size=batch, batch_repeat=b, n_members=members, input_repeat=rho, device=CPU
    )


def test_an_epoch_has_b_times_the_steps():
    vanilla = _indices(b=1)
    for b in (2, 4):
        assert _indices(b=b).shape[0] == b * vanilla.shape[0]
    assert _indices(b=4).shape == (64, 2, 64)


def test_each_batch_repeats_unique_images_b_times_per_member():
    idx = _indices(b=4, members=3)
    for step in idx[:10]:
        for member in step:
            counts = torch.bincount(member, minlength=1024)
            assert set(counts[counts > 0].tolist()) == {4}  # 16 unique images, 4 times each
        # every member sees the same multiset of images, in a different slot order
        assert torch.equal(step[0].sort().values, step[1].sort().values)
        assert not torch.equal(step[0], step[1])
    # over an epoch each image appears b times (last partial batch dropped)
    counts = torch.bincount(idx[:, 0].flatten(), minlength=1024)
    assert counts.max().item() == 4 and (counts == 4).sum().item() == 16 * idx.shape[0]


def test_member_inputs_differ():
    idx = _indices(b=4)
    same = (idx[:, 0] == idx[:, 1]).float().mean().item()
    assert same < 0.15  # chance coincidences only (~b/B)


def test_input_repetition_shares_a_fraction_of_slots():
    idx = _indices(b=2, rho=0.6)
    same = (idx[:, 0] == idx[:, 1]).float().mean().item()
    assert 0.55 < same < 0.7


@pytest.mark.parametrize("members", [2, 3, 4])
def test_every_member_reshuffles_the_same_images_on_its_own(members):
    """Member k >= 1 sees member 0's images in its own order: the same multiset each step,
    and no two members share their slot order (their draws are independent)."""
    idx = _indices(b=2, members=members)
    for step in idx[:8]:
        for member in step[1:]:
            assert torch.equal(member.sort().values, step[0].sort().values)
    for k, other in itertools.combinations(range(members), 2):
        same = (idx[:, k] == idx[:, other]).float().mean().item()
        assert same < 0.15, f"members {k} and {other} share {same:.0%} of their slots"


@pytest.mark.parametrize("members", [2, 3, 4])
@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_input_repetition_gives_all_members_the_same_image(members, rho):
    """§Training step 2: a fraction rho of slots gives *all* members one image (one draw per
    slot, not one per member); the other slots stay reshuffled."""
    idx = _indices(b=2, members=members, rho=rho)
    all_same = (idx == idx[:, :1]).all(dim=1).float().mean().item()
    assert rho - 0.05 < all_same < rho + 0.06  # + chance coincidences (~b/B per member)
    for k in range(1, members):
        assert rho - 0.05 < (idx[:, k] == idx[:, 0]).float().mean().item() < rho + 0.06


def test_repeats_are_independently_augmented():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    views = crop_flip(image.expand(64, -1, -1, -1), padding=4, flip=True)
    distinct = {v.numpy().tobytes() for v in views}
    assert len(distinct) > 40  # 81 crops x 2 flips: repeats rarely coincide


def test_crop_flip_geometry():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(500, 1, 1, 1)
    out = crop_flip(image, padding=0, flip=True)
    flipped = out[:, 0, 0, 0] == 3
    assert torch.equal(out[~flipped], image[~flipped])
    assert torch.equal(out[flipped], image[flipped].flip(3))
    assert 0.4 < flipped.float().mean().item() < 0.6
    padded = crop_flip(image, padding=1, flip=False)
    # every output is a shifted window of the zero-padded image
    full = torch.nn.functional.pad(image[:1], (1, 1, 1, 1))[0, 0]
    windows = {full[r : r + 4, c : c + 4].numpy().tobytes() for r in range(3) for c in range(3)}
    assert {p[0].numpy().tobytes() for p in padded} <= windows
    assert len({p[0].numpy().tobytes() for p in padded}) == 9


def test_augmented_normalises_and_keeps_member_layout():
    images = torch.full((10, 3, 8, 8), 255, dtype=torch.uint8)
    norm = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), CPU)
    idx = torch.tensor([[0, 1, 2], [3, 4, 5]])
    x = augmented(images, idx, norm, padding=0, flip=True)
    assert x.shape == (2, 3, 3, 8, 8)
    torch.testing.assert_close(x, torch.full_like(x, 2.0))  # (1 - 0.5) / 0.25
