"""Initialisation statistics: truncated He for convs, per-family heads (docs/method.md)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from mixmo_search.models import create_model

# Std of N(0, 1) truncated to (-2, 2), the constant the reference divides He's std by.
REFERENCE_TRUNCATED_STD = 0.87962566103423978
BOUND = 2 / REFERENCE_TRUNCATED_STD  # max |w| in units of He's std: 2.2737


def _he_std(weight: Tensor) -> float:
    return math.sqrt(2 / weight[0].numel())  # gain sqrt(2) over sqrt(fan_in)


def _rel_tolerance(n: int) -> float:
    # The std estimated from n draws of a truncated normal is off by about 1/sqrt(2n) (its
    # kurtosis is below 3); allow 5 of those, and 1 % for the large layers.
    return max(5 / math.sqrt(2 * n), 0.01)


@pytest.mark.parametrize("name", ["wrn16_4", "preactresnet18"])
def test_every_conv_is_truncated_he_fan_in(name: str) -> None:
    torch.manual_seed(0)
    net = create_model(name, n_members=2, num_classes=10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    pooled = torch.cat([(conv.weight / _he_std(conv.weight)).flatten() for conv in convs])
    assert pooled.std().item() == pytest.approx(1.0, abs=0.005)
    assert pooled.abs().max().item() <= BOUND * (1 + 1e-6)
    assert pooled.abs().max().item() > 0.99 * BOUND  # truncated at 2, not narrower
    for conv in convs:
        w = conv.weight.detach()
        assert w.std().item() == pytest.approx(_he_std(w), rel=_rel_tolerance(w.numel()))
        assert w.mean().abs().item() < 5 * _he_std(w) / math.sqrt(w.numel())


def test_wrn_heads_are_truncated_he() -> None:
    torch.manual_seed(0)
    net = create_model("wrn16_4", n_members=3, num_classes=100)  # head weight (300, 256)
    w = net.head.weight.detach()
    assert w.std().item() == pytest.approx(_he_std(w), rel=_rel_tolerance(w.numel()))
    assert w.abs().max().item() <= BOUND * _he_std(w) * (1 + 1e-6)
    for head in w.unflatten(0, (3, 100)):  # fused: each head drawn as a separate one would be
        assert head.std().item() == pytest.approx(_he_std(w), rel=_rel_tolerance(head.numel()))
    assert torch.equal(net.head.bias, torch.zeros_like(net.head.bias))


def test_preact_resnet_heads_are_gaussian_0_01() -> None:
    torch.manual_seed(0)
    net = create_model("preactresnet18", n_members=2, num_classes=100)  # head (200, 512)
    w = net.head.weight.detach()
    assert w.std().item() == pytest.approx(0.01, rel=_rel_tolerance(w.numel()))
    assert w.abs().max().item() > 3.5 * 0.01  # untruncated: 102 400 draws reach past 3.5 std
    assert torch.equal(net.head.bias, torch.zeros_like(net.head.bias))


@pytest.mark.parametrize("name", ["wrn10_1", "preactresnet18"])
def test_batchnorm_starts_as_identity(name: str) -> None:
    net = create_model(name, n_members=2, num_classes=10)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    for bn in norms:
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_truncated_std_constant() -> None:
    from mixmo_search.models.weight_init import TRUNCATED_STD, he_truncated_normal_

    assert TRUNCATED_STD == pytest.approx(REFERENCE_TRUNCATED_STD, abs=1e-15)
    torch.manual_seed(0)
    w = he_truncated_normal_(torch.empty(512, 128, 3, 3))  # 589 824 draws, fan_in 1152
    assert w.std().item() == pytest.approx(math.sqrt(2 / 1152), rel=0.005)
    assert w.abs().max().item() <= BOUND * math.sqrt(2 / 1152) * (1 + 1e-6)
