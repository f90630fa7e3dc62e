"""PreActResNet-18-w, pinned to the reference's (docs/method.md §Architectures)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mixmo_search.models import MixMoNet, create_model


@pytest.fixture(scope="module")
def net() -> MixMoNet:
    torch.manual_seed(0)
    return create_model("preactresnet18", n_members=2, num_classes=10).eval()


def _blocks(net: MixMoNet) -> list[nn.Module]:
    return [module for module in net.core if hasattr(module, "conv2")]


def test_no_batchnorm_after_the_last_stage(net: MixMoNet) -> None:
    # The reference pools the last block's output directly: no final BN-ReLU.
    tail = list(net.core)[len(_blocks(net)) :]
    assert [type(m) for m in tail] == [nn.AdaptiveAvgPool2d, nn.Flatten]
    z = torch.randn(2, 64, 32, 32)
    with torch.no_grad():
        features = net.core(z)  # (B, 512)
        last_map = nn.Sequential(*_blocks(net))(z)  # (B, 512, 4, 4)
    torch.testing.assert_close(features, F.avg_pool2d(last_map, 4).flatten(1))
    assert features.min() < 0  # a ReLU before the pool would make every feature >= 0


def test_block_strides_conv1_and_projects_the_preactivated_input(net: MixMoNet) -> None:
    block = _blocks(net)[2]  # first block of stage 2: 64 -> 128 channels, stride 2
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        pre = F.relu(block.bn1(x))
        expected = F.conv2d(pre, block.conv1.weight, stride=2, padding=1)
        expected = F.conv2d(F.relu(block.bn2(expected)), block.conv2.weight, padding=1)
        expected = expected + F.conv2d(pre, block.shortcut.weight, stride=2)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    assert [tuple(b.conv1.stride) for b in _blocks(net)][::2] == [(1, 1), (2, 2), (2, 2), (2, 2)]


def test_tiny_imagenet_shape(net: MixMoNet) -> None:
    # 64x64 input, stride-2 stem: maps 32, 16, 8, 4, so the last map is the reference's 4x4.
    tiny = create_model("preactresnet18", n_members=2, num_classes=200, stem_stride=2).eval()
    with torch.no_grad():
        assert tiny(torch.randn(1, 3, 64, 64)).shape == (2, 1, 200)
