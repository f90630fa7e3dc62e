"""Pins MixMo's mixing to docs/method.md §Training step: clipped boxes, kappa, p schedule,
reweighting, input MSDA."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixmo_search.config import BINARY_BLOCKS, MIX_BLOCKS
from mixmo_search.mixing import (
    box_masks,
    loss_weights,
    make_mix,
    mix_inputs,
    p_at,
    sample_kappa,
)

CPU = torch.device("cpu")


def _mix(block: str, *, n_members: int = 2, batch: int = 256, p: float = 1.0, alpha=2.0, seed=0):
    torch.manual_seed(seed)
    return make_mix(
        block,
        n_members=n_members,
        batch=batch,
        size=(32, 32),
        alpha=alpha,
        p=p,
        host_gen=torch.Generator().manual_seed(seed),
        device=CPU,
    )


def test_cut_mask_mean_area_with_alpha_2_is_about_0_31():
    # spec step 5: clipping at the border makes the real mean area ~0.31, not 0.5
    torch.manual_seed(0)
    kappa = sample_kappa(2.0, 2, 20000, CPU)[0]
    area = box_masks(kappa, 32, 32).mean(dim=(1, 2, 3))
    assert abs(area.mean().item() - 0.31) < 0.01
    assert abs(kappa.mean().item() - 0.5) < 0.01


def test_box_rule_matches_reference_on_a_known_case():
    # kappa = 0.25 on 32x32: sides floor(32 * 0.5) = 16, span centre -/+ 8, clipped
    torch.manual_seed(0)
    masks = box_masks(torch.full((4000,), 0.25), 32, 32)
    per_sample = masks.mean(dim=(1, 2, 3))
    assert per_sample.max().item() == pytest.approx(0.25)  # an unclipped 16x16 box
    assert per_sample.min().item() >= 64 / 1024 - 1e-6  # a corner box keeps 8x8
    rows = masks[:, 0].amax(dim=2)  # (N, h): rows touched by the box are contiguous
    first = rows.argmax(dim=1)
    count = rows.sum(dim=1).long()
    assert all(rows[i, first[i] : first[i] + count[i]].all() for i in range(50))


@pytest.mark.parametrize("block", BINARY_BLOCKS)
@pytest.mark.parametrize("n_members", [2, 3])
def test_binary_masks_partition_each_position(block, n_members):
    mix = _mix(block, n_members=n_members, batch=64)
    assert mix.binary and mix.masks.shape == (n_members, 64, 1, 32, 32)
    torch.testing.assert_close(mix.masks.sum(0), torch.ones(64, 1, 32, 32))
    # kappa is recomputed as the real mask mean
    torch.testing.assert_close(mix.kappa, mix.masks.mean(dim=(2, 3, 4)))
    # exactly one member holds a {0,1} region; the others share the rest linearly
    holders = ((mix.masks == 0) | (mix.masks == 1)).all(dim=(1, 2, 3, 4))
    assert holders.sum().item() >= 1


def test_role_holder_is_drawn_per_batch():
    holders = set()
    for seed in range(20):
        mix = _mix("cut", n_members=3, batch=8, seed=seed)
        binary_member = ((mix.masks == 0) | (mix.masks == 1)).all(dim=(1, 2, 3, 4))
        holders.add(int(binary_member.float().argmax()))
    assert holders == {0, 1, 2}


def test_binary_choice_follows_p():
    gen = torch.Generator().manual_seed(0)
    n_binary = sum(
        make_mix(
            "cut", n_members=2, batch=2, size=(8, 8), alpha=2.0, p=0.3, host_gen=gen, device=CPU
        ).binary
        for _ in range(2000)
    )
    assert abs(n_binary / 2000 - 0.3) < 0.04
    assert not _mix("linear", p=1.0).binary
    assert not _mix("sum", p=1.0).binary


def test_linear_and_sum_masks():
    mix = _mix("linear", n_members=3, batch=128)
    torch.testing.assert_close(mix.masks.sum(0), torch.ones(128, 1, 32, 32))
    assert mix.kappa.std().item() > 0.05  # Dirichlet(2,2,2) draws differ per sample
    mimo = _mix("sum", n_members=2, batch=16)  # alpha ignored: exactly 1/M (MIMO)
    torch.testing.assert_close(mimo.masks, torch.full((2, 16, 1, 32, 32), 0.5))
    torch.testing.assert_close(_mix("linear", alpha=0.0).kappa, torch.full((2, 256), 0.5))


def test_kappa_is_beta_for_two_and_dirichlet_beyond():
    torch.manual_seed(0)
    two = sample_kappa(2.0, 2, 50000, CPU)
    torch.testing.assert_close(two.sum(0), torch.ones(50000))
    assert two[0].var().item() == pytest.approx(1 / 20, rel=0.05)  # Beta(2,2): 1/(4*5)
    three = sample_kappa(2.0, 3, 50000, CPU)
    assert three.mean(1).tolist() == pytest.approx([1 / 3] * 3, abs=0.01)


@pytest.mark.parametrize("n_members", [1, 2, 3, 4])
@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_kappa_is_dirichlet_for_every_member_count(n_members, alpha):
    """Each share of Dirichlet(alpha, ..., alpha) is Beta(alpha, (M - 1) alpha): mean 1/M,
    variance a b / (s^2 (s + 1)); the shares of a sample add up to 1."""
    torch.manual_seed(0)
    kappa = sample_kappa(alpha, n_members, 40000, CPU)
    assert kappa.shape == (n_members, 40000)
    torch.testing.assert_close(kappa.sum(0), torch.ones(40000))
    a, total = alpha, n_members * alpha
    variance = a * (total - a) / (total**2 * (total + 1))
    for k in range(n_members):
        assert kappa[k].mean().item() == pytest.approx(1 / n_members, abs=0.01), k
        assert kappa[k].var().item() == pytest.approx(variance, rel=0.06, abs=1e-9), k


@pytest.mark.parametrize("n_members", [1, 2, 3, 4])
def test_alpha_zero_gives_each_member_exactly_one_mth(n_members):
    kappa = sample_kappa(0.0, n_members, 8, CPU)
    torch.testing.assert_close(kappa, torch.full((n_members, 8), 1 / n_members))


@pytest.mark.parametrize("block", ["linear", "sum"])
@pytest.mark.parametrize("n_members", [1, 2, 3, 4])
def test_linear_masks_are_each_members_drawn_share(block, n_members):
    """Member k's linear mask is its own draw kappa_k everywhere (not another member's)."""
    torch.manual_seed(3)
    drawn = sample_kappa(0.0 if block == "sum" else 2.0, n_members, 32, CPU)
    mix = _mix(block, n_members=n_members, batch=32, seed=3)
    torch.testing.assert_close(mix.kappa, drawn)
    torch.testing.assert_close(mix.masks, drawn[:, :, None, None, None].expand_as(mix.masks))


def _box_side(kappa: torch.Tensor, side: int) -> torch.Tensor:
    """The box rule's side for a drawn share (§Training step 5), as box_masks rounds it."""
    return 2 * (torch.floor(side * kappa.sqrt()) // 2)


def _is_box_of(region: torch.Tensor, kappa: torch.Tensor) -> bool:
    """Whether `region` (h, w) is one rectangle with the rule's sides for `kappa`, shorter
    only where it touches the border (clipped)."""
    rows, cols = region.any(1), region.any(0)
    for hit, side in ((rows, region.shape[0]), (cols, region.shape[1])):
        span = hit.nonzero()[:, 0]
        length = len(span)
        if length and span[-1] - span[0] + 1 != length:
            return False  # not contiguous
        nominal = int(_box_side(kappa, side))
        clipped = length and (span[0] == 0 or span[-1] == side - 1)
        if length > nominal or (length < nominal and not clipped):
            return False
    return bool((region == (rows[:, None] & cols[None, :])).all())


@pytest.mark.parametrize("n_members", [2, 3, 4])
def test_binary_shares_follow_each_members_draw(n_members):
    """Cut batches: one member's mask is the box of the first draw kappa_0; outside it the
    others share the map in proportion to the remaining draws kappa_1..kappa_{M-1}."""
    batch = 48
    torch.manual_seed(5)
    drawn = sample_kappa(2.0, n_members, batch, CPU)  # make_mix's draw under the same seed
    mix = _mix("cut", n_members=n_members, batch=batch, seed=5)
    masks = mix.masks[:, :, 0]  # (M, B, h, w)
    for b in range(batch):
        expected_rest = sorted((drawn[1:, b] / drawn[1:, b].sum()).tolist())
        found = False
        for holder in range(n_members):
            region = masks[holder, b]
            if not ((region == 0) | (region == 1)).all() or not _is_box_of(
                region > 0, drawn[0, b]
            ):
                continue
            outside = region == 0
            others = [k for k in range(n_members) if k != holder]
            if outside.any():
                inside_zero = all((masks[k, b][~outside] == 0).all() for k in others)
                values = [masks[k, b][outside] for k in others]
                constant = all((v == v[0]).all() for v in values)
                shares = sorted(v[0].item() for v in values)
                if inside_zero and constant and shares == pytest.approx(expected_rest, abs=1e-6):
                    found = True
            else:
                found = True  # the box covers the map: the others hold nothing
        assert found, f"sample {b}: no member holds the box of kappa_0 with the rest shared"


def test_input_mixing_is_decided_and_drawn_per_member():
    torch.manual_seed(0)
    images, partners = torch.zeros(3, 4000, 1, 8, 8), torch.ones(3, 4000, 1, 8, 8)
    masks = torch.full((3, 4000, 1, 8, 8), 1 / 3)
    _, lam, use = mix_inputs(images, partners, masks, kind="mixup", prob=0.5, alpha=1.0)
    for k, other in ((0, 1), (0, 2), (1, 2)):
        agree = (use[k] == use[other]).float().mean().item()
        assert 0.45 < agree < 0.55, "members share their decision to mix"
        both = use[k] & use[other]
        assert (lam[k][both] != lam[other][both]).float().mean().item() > 0.99


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    n_members=st.integers(1, 4),
    r=st.sampled_from([0.5, 1.0, 3.0, 10.0, math.inf]),
    seed=st.integers(0, 2**16),
)
def test_reweighting_matches_the_formula_for_every_member_count(n_members, r, seed):
    """w_k = M kappa_k^(1/r) / sum_j kappa_j^(1/r) on Dirichlet draws (§Training step 7)."""
    gen = torch.Generator().manual_seed(seed)
    exponential = -torch.rand(n_members, 6, generator=gen).log()
    kappa = exponential / exponential.sum(0)  # Dirichlet(1, ..., 1): shares of each sample
    weights = loss_weights(kappa, r).double()
    powered = kappa.double() ** (0.0 if math.isinf(r) else 1 / r)
    expected = n_members * powered / powered.sum(0)
    torch.testing.assert_close(weights, expected, rtol=1e-5, atol=1e-6)


def test_reweighting_matches_the_formula():
    kappa = torch.tensor([[0.8, 0.1], [0.2, 0.9]])  # (M=2, B=2)
    for r in (1.0, 3.0):
        w = loss_weights(kappa, r)
        for b in range(2):
            roots = [kappa[k, b].item() ** (1 / r) for k in range(2)]
            expected = [2 * x / sum(roots) for x in roots]
            assert w[:, b].tolist() == pytest.approx(expected)
    assert loss_weights(kappa, 1.0)[:, 0].tolist() == pytest.approx([1.6, 0.4])  # prop. kappa
    torch.testing.assert_close(loss_weights(kappa, math.inf), torch.ones(2, 2))
    # a small r (a high power) weights the larger share alone, without 0/0 (it gave zeros)
    for r in (1e-2, 1e-3, 1e-6):
        assert loss_weights(kappa, r)[:, 0].tolist() == pytest.approx([2.0, 0.0])
    assert loss_weights(torch.tensor([[1.0], [0.0]]), 3.0)[:, 0].tolist() == [2.0, 0.0]
    assert loss_weights(kappa, 3.0).sum(0).tolist() == pytest.approx([2.0, 2.0])


def test_p_schedule():
    epochs, p = 300, 0.5
    values = [p_at(e, epochs, p) for e in range(epochs)]
    start = epochs * 11 / 12
    assert all(v == p for e, v in enumerate(values) if e / (epochs - 1) <= 11 / 12)
    assert values[-1] == 0.0
    tail = values[int(start) + 1 :]
    assert all(a > b for a, b in zip(tail, tail[1:], strict=False))  # strictly decreasing
    mid = (epochs - 1) * (1 - 1 / 24)  # halfway through the decay
    assert p_at(round(mid), epochs, p) == pytest.approx(p / 2, abs=0.01)
    assert p_at(0, 1, p) == p


def test_input_cutmix_labels_use_the_visible_fraction():
    torch.manual_seed(0)
    n_members, batch = 2, 512
    images = torch.zeros(n_members, batch, 1, 32, 32)
    partners = torch.ones(n_members, batch, 1, 32, 32)
    mix = _mix("cut", n_members=n_members, batch=batch)
    mixed, lam, use = mix_inputs(images, partners, mix.masks, kind="cutmix", prob=0.5, alpha=1.0)
    assert abs(use.float().mean().item() - 0.5) < 0.05
    assert (lam >= 0.5).all() and (lam[~use] == 1).all()
    # own image is 0, partner is 1: own share of what the member keeps == lam
    kept = mix.masks
    own_visible = ((1 - mixed) * kept).sum((2, 3, 4)) / kept.sum((2, 3, 4)).clamp(min=1e-8)
    has_region = kept.sum((2, 3, 4)) > 0
    torch.testing.assert_close(own_visible[has_region], lam[has_region], atol=1e-5, rtol=0)


def test_input_mixup_is_a_uniform_blend():
    torch.manual_seed(0)
    images, partners = torch.zeros(2, 64, 3, 8, 8), torch.ones(2, 64, 3, 8, 8)
    mix = _mix("linear", batch=64)
    mixed, lam, use = mix_inputs(
        images, partners, mix.masks[..., :8, :8], kind="mixup", prob=1.0, alpha=1.0
    )
    assert use.all()
    torch.testing.assert_close(1 - mixed.mean((2, 3, 4)), lam)


@pytest.mark.parametrize("block", MIX_BLOCKS)
def test_every_block_the_config_accepts_mixes(block):
    mix = _mix(block, n_members=3, batch=8)
    assert mix.masks.shape == (3, 8, 1, 32, 32) and mix.binary == (block in BINARY_BLOCKS)
    assert torch.allclose(mix.masks.sum(0), torch.ones(8, 1, 32, 32))  # shares add up to 1


@pytest.mark.parametrize("block", ["linear", "sum", *BINARY_BLOCKS])
def test_every_batch_has_one_mask_layout(block):
    """Linear and binary batches give masks of one shape and layout, so a compiled model
    (`run.compile`) traces one graph for both instead of recompiling on the first switch."""
    binary = _mix("cut", n_members=3, batch=8, p=1.0)
    other = _mix(block, n_members=3, batch=8, p=0.0 if block in BINARY_BLOCKS else 1.0)
    assert other.masks.shape == binary.masks.shape == (3, 8, 1, 32, 32)
    assert other.masks.stride() == binary.masks.stride() == binary.masks.contiguous().stride()
