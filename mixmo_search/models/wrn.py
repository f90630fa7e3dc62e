"""Wide ResNet WRN-d-w (Zagoruyko & Komodakis 2016) as a MixMoNet, with its entry points."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from mixmo_search.models.mixmo import MixMoNet
from mixmo_search.models.registry import register_model
from mixmo_search.models.weight_init import init_weights

STEM_WIDTH = 16  # channels out of each encoder


class WideBlock(nn.Module):
    """The reference's wide block (docs/method.md §Architectures), not the pre-act block.

    BN-ReLU -> conv3x3 (stride 1) -> BN-ReLU -> conv3x3 (carries the stride), plus a shortcut
    that reads the block's *raw* input: identity, or a 1x1 conv when width or stride changes.
    At stride 2 the second conv pads TensorFlow-"same" style: one zero row and column on the
    bottom and right only, so output pixel i sees input pixels 2i..2i+2.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        padding = 1 if stride == 1 else 0  # strided: padded by hand in forward
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride, padding, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # In-place ReLUs: BatchNorm's backward needs its input, not its output, so the ReLU
        # can overwrite it and one activation less is kept per BN-ReLU.
        out = self.bn2(self.conv1(F.relu(self.bn1(x), inplace=True)))
        if self.stride != 1:
            out = F.pad(out, (0, 1, 0, 1))  # (left, right, top, bottom); relu(0) = 0
        out = self.conv2(F.relu(out, inplace=True))
        return out + (x if self.shortcut is None else self.shortcut(x))


def _wide_core(in_channels: int, widths: Sequence[int], blocks_per_group: int) -> nn.Sequential:
    """Three groups of wide blocks (strides 1, 2, 2), then BN-ReLU and global average pool."""
    blocks: list[nn.Module] = []
    for width, group_stride in zip(widths, (1, 2, 2), strict=True):
        for i in range(blocks_per_group):
            blocks.append(WideBlock(in_channels, width, group_stride if i == 0 else 1))
            in_channels = width
    return nn.Sequential(
        *blocks,
        nn.BatchNorm2d(in_channels),  # the blocks end on a sum: pre-activate the features
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # (B, widths[-1])
    )


def build_wide_resnet(
    depth: int,
    width: int,
    *,
    n_members: int,
    num_classes: int,
    in_channels: int = 3,
    stem_stride: int = 1,
) -> MixMoNet:
    """WRN-`depth`-`width` as a MixMoNet: M 3x3 stem convs, three wide groups, M linear heads."""
    # docs/method.md §Architectures: 16-channel 3x3 stem, three groups of (d-4)/6 wide blocks
    # at 16w/32w/64w.
    if (depth - 4) % 6 != 0:
        raise ValueError(f"WRN depth must be 6n+4 (e.g. 16, 28); got {depth}")
    widths = [16 * width, 32 * width, 64 * width]
    encoders = [
        nn.Conv2d(in_channels, STEM_WIDTH, 3, stem_stride, padding=1, bias=False)
        for _ in range(n_members)
    ]
    core = _wide_core(STEM_WIDTH, widths, blocks_per_group=(depth - 4) // 6)
    net = MixMoNet(encoders=encoders, core=core, feature_dim=widths[-1], num_classes=num_classes)
    init_weights(net, head_std=None)  # the reference's WRN heads are truncated He, like convs
    return net


@register_model
def wrn28_10(**kwargs: int) -> MixMoNet:
    """WRN-28-10, the CIFAR reference backbone (36,486,036 parameters at M=2, K=10)."""
    return build_wide_resnet(28, 10, **kwargs)


@register_model
def wrn28_2(**kwargs: int) -> MixMoNet:
    """WRN-28-2: the reference depth at width 2 (~1.5M parameters)."""
    return build_wide_resnet(28, 2, **kwargs)


@register_model
def wrn16_4(**kwargs: int) -> MixMoNet:
    """WRN-16-4 (~2.7M parameters)."""
    return build_wide_resnet(16, 4, **kwargs)


@register_model
def wrn16_2(**kwargs: int) -> MixMoNet:
    """WRN-16-2 (~0.7M parameters)."""
    return build_wide_resnet(16, 2, **kwargs)


@register_model
def wrn10_1(**kwargs: int) -> MixMoNet:
    """WRN-10-1, a tiny model for CPU recipes and tests (~0.08M parameters)."""
    return build_wide_resnet(10, 1, **kwargs)
