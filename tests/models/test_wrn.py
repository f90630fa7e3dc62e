"""The WRN wide block and core, pinned to the reference's (docs/method.md §Architectures).

The blocks are taken from a built `wrn10_1` (groups 16->16 s1, 16->32 s2, 32->64 s2), so these
tests check what the entry points build, not just the block class.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixmo_search.models import MixMoNet, create_model

SIZE = 8  # even, as the strided blocks need


@pytest.fixture(scope="module")
def net() -> MixMoNet:
    torch.manual_seed(0)
    net = create_model("wrn10_1", n_members=2, num_classes=10).eval()
    # Non-trivial BatchNorm (eval mode: running statistics), so relu(bn(x)) is far from x.
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return net


def _blocks(net: MixMoNet) -> list[nn.Module]:
    return [module for module in net.core if hasattr(module, "conv2")]


def _strided_block(net: MixMoNet) -> nn.Module:
    return _blocks(net)[1]  # 16 -> 32 channels, stride 2


def _bn(bn: nn.BatchNorm2d, x: Tensor) -> Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)


def test_block_shapes_and_where_the_stride_sits(net: MixMoNet) -> None:
    shapes = []
    x = torch.randn(2, 16, SIZE, SIZE)
    with torch.no_grad():
        for block in _blocks(net):
            x = block(x)
            shapes.append(tuple(x.shape))
            assert block.conv1.stride == (1, 1)  # the first conv never strides
    assert shapes == [(2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]
    strided = _strided_block(net)
    assert strided.conv2.stride == (2, 2) and strided.conv2.padding == (0, 0)
    assert strided.shortcut.kernel_size == (1, 1) and strided.shortcut.stride == (2, 2)
    assert _blocks(net)[0].shortcut is None  # same width, stride 1: identity


def test_strided_block_is_the_explicit_computation(net: MixMoNet) -> None:
    block = _strided_block(net)
    x = torch.randn(2, 16, SIZE, SIZE)
    pre = F.relu(_bn(block.bn1, x))
    mid = F.relu(_bn(block.bn2, F.conv2d(pre, block.conv1.weight, padding=1)))
    tf_same = F.pad(mid, (0, 1, 0, 1))  # one zero column right, one zero row bottom
    expected = F.conv2d(tf_same, block.conv2.weight, stride=2)
    expected = expected + F.conv2d(x, block.shortcut.weight, stride=2)  # the raw input
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_strided_block_output_sees_rows_0_to_3(net: MixMoNet) -> None:
    # TensorFlow "same" padding: output row i of the strided conv reads rows 2i..2i+2 of its
    # input (row SIZE is the zero pad), so through conv1 output row 0 reaches input rows 0..3
    # and the last output row rows SIZE-3..SIZE-1. Symmetric padding would give 0..2 and
    # SIZE-4..SIZE-1; striding conv1 instead gives 0..3 and SIZE-5..SIZE-1.
    block = _strided_block(net)
    x = torch.randn(2, 16, SIZE, SIZE, requires_grad=True)
    out = block(x)
    first_rows = torch.autograd.grad(out[..., 0, :].sum(), x, retain_graph=True)[0]
    last_rows = torch.autograd.grad(out[..., -1, :].sum(), x)[0]
    reached_by_first = first_rows.abs().sum((0, 1, 3)) > 0  # (SIZE,) per input row
    reached_by_last = last_rows.abs().sum((0, 1, 3)) > 0
    assert reached_by_first.tolist() == [True] * 4 + [False] * (SIZE - 4)
    assert reached_by_last.tolist() == [False] * (SIZE - 3) + [True] * 3


def test_projection_shortcut_reads_the_raw_input(net: MixMoNet) -> None:
    block = _strided_block(net)
    x = torch.randn(2, 16, SIZE, SIZE)
    saved = block.conv2.weight.detach().clone()
    with torch.no_grad():
        block.conv2.weight.zero_()  # silence the residual branch: out = shortcut(input)
        try:
            out = block(x)
        finally:
            block.conv2.weight.copy_(saved)
    torch.testing.assert_close(out, F.conv2d(x, block.shortcut.weight, stride=2))


def test_identity_shortcut_adds_the_raw_input(net: MixMoNet) -> None:
    block = _blocks(net)[0]
    x = torch.randn(2, 16, SIZE, SIZE)
    saved = block.conv2.weight.detach().clone()
    with torch.no_grad():
        block.conv2.weight.zero_()
        try:
            out = block(x)
        finally:
            block.conv2.weight.copy_(saved)
    torch.testing.assert_close(out, x)


def test_core_ends_with_bn_relu_and_global_pool(net: MixMoNet) -> None:
    tail = list(net.core)[len(_blocks(net)) :]
    assert [type(m) for m in tail] == [nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d, nn.Flatten]
    with torch.no_grad():
        features = net.core(torch.randn(2, 16, SIZE, SIZE))
    assert features.shape == (2, 64) and features.min() >= 0


@pytest.mark.parametrize("name", ["wrn10_1", "wrn16_2"])
def test_no_biases_and_batchnorm_momentum(name: str) -> None:
    net = create_model(name, n_members=2, num_classes=10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(conv.bias is None for conv in convs)
    assert all(m.momentum == 0.1 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
