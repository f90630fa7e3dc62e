"""The training step's wiring, checked against the method written out by hand.

`make_batch` and `mixmo_loss` are what `train()` runs at every step. Each test fixes the
random draws, lets the trainer's code build its batch and loss, and recomputes the same
quantity from docs/method.md §Training step with plain tensor ops: features mixed as
z = M sum_k mask_k * conv1_k(x_k), soft CutMix targets from the visible fraction, head k's
cross-entropy weighted by M kappa_k^(1/r) / sum_j kappa_j^(1/r).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixmo_search.config import resolve_config
from mixmo_search.data import Normalizer, epoch_indices
from mixmo_search.datasets import Split
from mixmo_search.models import create_model
from mixmo_search.step import make_batch, mixmo_loss
from mixmo_search.train import EpochReport, train

CLASSES, SIZE = 10, 8


def _images(n: int, size: int = SIZE, channels: int = 1, seed: int = 0) -> Split:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
    return Split(images, torch.randint(0, CLASSES, (n,), generator=gen))


def _batch(cfg, train_split, *, p: float, seed: int = 0, n_members: int = 2):
    torch.manual_seed(seed)
    idx = epoch_indices(
        len(train_split), batch_size=cfg.optim.batch_size, batch_repeat=cfg.optim.batch_repeat,
        n_members=n_members, input_repeat=0.0, device=torch.device("cpu"),
    )[0]  # fmt: skip
    channels = train_split.images.shape[1]
    normalize = Normalizer((0.5,) * channels, (0.25,) * channels, "cpu")
    return idx, make_batch(
        train_split, idx, cfg, p=p, normalize=normalize, mask_size=(SIZE, SIZE),
        host_gen=torch.Generator().manual_seed(seed),
    )  # fmt: skip


def _cfg(*overrides: str):
    return resolve_config(preset="digits_quick", overrides=list(overrides))


@pytest.mark.parametrize("n_members", [2, 3])
@pytest.mark.parametrize("r", [1.0, 3.0])
def test_the_loss_is_the_reweighted_cross_entropy_of_the_mixed_features(n_members, r):
    cfg = _cfg(
        "mixing.input_mix=cutmix", "mixing.input_mix_prob=0.7", f"model.n_members={n_members}"
    )
    split = _images(256)
    _, batch = _batch(cfg, split, p=1.0, n_members=n_members)
    assert batch.mix.binary and batch.own_share is not None
    model = create_model("wrn10_1", n_members=n_members, num_classes=CLASSES, in_channels=1)
    model.eval()  # BN on running statistics: both computations see the same network

    loss = mixmo_loss(model(batch.images, batch.mix.masks), batch, r)

    # by hand: mask k multiplies member k's own features, and weighs member k's head
    masks = batch.mix.masks  # (M, B, 1, h, w)
    z = n_members * sum(masks[k] * model.encoders[k](batch.images[k]) for k in range(n_members))
    heads = model.head(model.core(z)).unflatten(1, (n_members, CLASSES))  # (B, M, K)
    kappa = masks.mean(dim=(2, 3, 4))  # (M, B): the real share of each member
    assert torch.allclose(batch.mix.kappa, kappa)
    powered = kappa ** (1 / r)
    weights = n_members * powered / powered.sum(0)
    total = torch.zeros(())
    for k in range(n_members):
        own = F.one_hot(batch.labels[k], CLASSES).float()
        partner = F.one_hot(batch.partner_labels[k], CLASSES).float()
        lam = batch.own_share[k][:, None]
        target = lam * own + (1 - lam) * partner
        ce = -(target * F.log_softmax(heads[:, k], dim=1)).sum(1)  # (B,)
        total = total + weights[k] * ce
    assert loss.item() == pytest.approx(total.mean().item(), rel=1e-5)


@pytest.mark.parametrize("n_members", [1, 2, 3])
@pytest.mark.parametrize("input_mix", ["none", "cutmix"])
def test_each_member_trains_on_its_own_images_and_labels(n_members, input_mix):
    """Member k's input is the image at idx[k] and its label that image's label; with input
    mixing its partner label is the label of the image pasted into member k's input."""
    plain = ("data.crop_padding=0", "data.flip=false", f"model.n_members={n_members}")
    cfg = _cfg(*plain, f"mixing.input_mix={input_mix}", "mixing.input_mix_prob=1.0")
    split = _images(256, channels=3)
    idx, batch = _batch(cfg, split, p=1.0, n_members=n_members)
    assert torch.equal(batch.labels, split.labels[idx])
    normalize = Normalizer((0.5,) * 3, (0.25,) * 3, "cpu")
    own = normalize(split.images[idx.flatten()]).view(batch.images.shape)
    if input_mix == "none":
        assert torch.equal(batch.images, own)
        return
    # where a member's input differs from its own image it shows its partner's image
    shown = (batch.images == own).all(dim=2)  # (M, B, H, W)
    assert shown.any() and (~shown).any()
    for k in range(n_members):
        for b in range(0, batch.images.shape[1], 7):
            pasted = ~shown[k, b]
            if pasted.any():
                partner = split.images[split.labels == batch.partner_labels[k, b]]
                candidates = normalize(partner)[:, :, pasted]  # (n, C, pixels)
                seen = batch.images[k, b][:, pasted]
                assert (candidates == seen).all(dim=(1, 2)).any(), (k, b)


@pytest.mark.parametrize("seed", range(8))
def test_cutmix_targets_are_the_visible_fraction_of_each_source(seed):
    no_pad = ("optim.batch_repeat=1", "data.crop_padding=0")  # no zero border both images share
    cfg = _cfg("mixing.input_mix=cutmix", "mixing.input_mix_prob=0.8", *no_pad)
    split = _images(128, channels=3)
    _, batch = _batch(cfg, split, p=1.0, seed=seed)
    clean = _batch(_cfg(*no_pad), split, p=1.0, seed=seed)[1]  # the same draws, unmixed
    assert torch.equal(clean.labels, batch.labels)
    # where the mixed image still shows the member's own (augmented) pixels, the own image is
    # visible; the partner shows elsewhere (random RGB pixels: equal by chance ~1 in 2^24)
    own_pixels = (batch.images == clean.images).all(dim=2, keepdim=True).float()  # (M,B,1,H,W)
    kept = batch.mix.masks.expand_as(own_pixels)  # the region each member keeps after MixMo
    keeps = kept.sum(dim=(2, 3, 4))  # 0 for a member whose mask is empty (an empty box)
    visible = (own_pixels * kept).sum(dim=(2, 3, 4)) / keeps.clamp(min=1e-12)
    mixed = own_pixels.mean(dim=(2, 3, 4)) < 1
    assert mixed.any() and (~mixed).any()
    seen = mixed & (keeps > 0)  # what a member keeps nothing of has no visible fraction
    assert torch.allclose(batch.own_share[seen], visible[seen], atol=1e-6)
    assert (batch.own_share[mixed] >= 0.5).all()  # the own image is the primary source
    # unchanged inputs are unmixed, unless mixed with themselves (a partner is any image)
    itself = batch.partner_labels == batch.labels
    assert (batch.own_share[~mixed & ~itself] == 1).all()


def test_each_members_mask_multiplies_that_members_features():
    """Member k's encoder gives the constant k + 1: the core then sees M sum_k mask_k (k+1)."""
    cfg = _cfg("model.n_members=3")
    _, batch = _batch(cfg, _images(256), p=1.0, n_members=3)
    model = create_model("wrn10_1", n_members=3, num_classes=CLASSES, in_channels=1).eval()
    for k, encoder in enumerate(model.encoders):
        torch.nn.init.zeros_(encoder.weight)
        encoder.register_forward_hook(lambda mod, args, out, k=k: out + (k + 1))
    seen = {}
    model.core.register_forward_pre_hook(lambda mod, args: seen.update(z=args[0]))
    model(batch.images, batch.mix.masks)
    expected = 3 * sum(batch.mix.masks[k] * (k + 1) for k in range(3))  # (B, 1, h, w)
    assert torch.allclose(seen["z"], expected.expand_as(seen["z"]))
    # and the patch holder changes from batch to batch (drawn once a batch, spec step 4)
    holders = {
        int(_batch(cfg, _images(256), p=1.0, seed=s, n_members=3)[1].mix.kappa.mean(1).argmax())
        for s in range(12)
    }
    assert len(holders) > 1


def test_repeats_of_an_image_are_augmented_one_by_one():
    cfg = _cfg("optim.batch_repeat=4", "data.crop_padding=4", "data.flip=true")
    split = _images(64, size=32, channels=3)
    idx, batch = _batch(cfg, split, p=0.0)
    member = idx[0]  # (B,) member 0's indices: each image 4 times
    for image in member.unique():
        slots = (member == image).nonzero()[:, 0]
        assert len(slots) == 4
        views = batch.images[0, slots]  # (4, C, H, W)
        distinct = {tuple(v.flatten().tolist()[:64]) + (v.sum().item(),) for v in views}
        assert len(distinct) > 1, "the repeats of one image were augmented once and copied"


def test_the_logged_p_drives_the_binary_block(tmp_path):
    reports: list[EpochReport] = []
    cfg = resolve_config(
        preset="digits_quick",
        overrides=[f"run.out_dir={tmp_path}", "run.progress=false", "optim.epochs=3",
                   "mixing.p=1.0", "run.max_steps_per_epoch=12", "optim.milestones=[3]"],
    )  # fmt: skip
    train(cfg, on_epoch=reports.append)
    p_logged = [r.metrics["p"] for r in reports]
    binary = [r.metrics["train/binary_frac"] for r in reports]
    assert p_logged == [1.0, 1.0, 0.0]  # p falls to 0 over the last 1/12 of training
    assert binary == p_logged  # every batch binary while p = 1, none once it reached 0


def test_half_the_batches_are_binary_at_p_one_half(tmp_path):
    reports: list[EpochReport] = []
    cfg = resolve_config(
        preset="digits_quick",
        overrides=[f"run.out_dir={tmp_path}", "run.progress=false", "optim.epochs=1",
                   "mixing.p=0.5", "mixing.p_decay_start=1.0", "run.max_steps_per_epoch=40"],
    )  # fmt: skip
    train(cfg, on_epoch=reports.append)
    assert reports[0].metrics["p"] == 0.5
    assert 0.2 <= reports[0].metrics["train/binary_frac"] <= 0.8  # 40 steps: binomial(40, .5)
