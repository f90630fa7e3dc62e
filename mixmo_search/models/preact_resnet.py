"""PreActResNet-18-w (He et al. 2016) as a MixMoNet, with its entry points (Tiny ImageNet)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from mixmo_search.models.mixmo import MixMoNet
from mixmo_search.models.registry import register_model
from mixmo_search.models.weight_init import init_weights

STEM_WIDTH = 64  # channels out of each encoder
BLOCKS_PER_STAGE = 2  # 18 layers: stem + 4 stages x 2 blocks x 2 convs + head


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus shortcut.

    When the shape changes the shortcut is a 1x1 conv of the *pre-activated* input, as in the
    reference. (The WRN wide block differs on both counts: see `wrn.WideBlock`.)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x), inplace=True)  # in place: BN's backward reads its input
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(F.relu(self.bn2(self.conv1(pre)), inplace=True))
        return out + skip


def _preact_core(widths: Sequence[int], strides: Sequence[int]) -> nn.Sequential:
    """Four stages of two pre-activation blocks, then global average pooling.

    No BN-ReLU before the pooling, as in the reference (docs/method.md §Architectures): the
    features are the last block's sum. The reference pools 4x4 (the last map on Tiny ImageNet),
    which is this global pool at that size.
    """
    blocks: list[nn.Module] = []
    in_channels = STEM_WIDTH
    for width, stage_stride in zip(widths, strides, strict=True):
        for i in range(BLOCKS_PER_STAGE):
            blocks.append(PreActBlock(in_channels, width, stage_stride if i == 0 else 1))
            in_channels = width
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, widths[-1])


def build_preact_resnet18(
    width: int, *, n_members: int, num_classes: int, in_channels: int = 3, stem_stride: int = 1
) -> MixMoNet:
    """PreActResNet-18-`width` as a MixMoNet: M 3x3 stem convs, four stages, M linear heads."""
    # docs/method.md §Architectures: 64-channel stem (stride 2 on Tiny ImageNet, set by
    # stem_stride), four stages of two blocks at 64w/128w/256w/512w, strides 1, 2, 2, 2.
    widths = [64 * width, 128 * width, 256 * width, 512 * width]
    encoders = [
        nn.Conv2d(in_channels, STEM_WIDTH, 3, stem_stride, padding=1, bias=False)
        for _ in range(n_members)
    ]
    core = _preact_core(widths, strides=[1, 2, 2, 2])
    net = MixMoNet(encoders=encoders, core=core, feature_dim=widths[-1], num_classes=num_classes)
    init_weights(net, head_std=0.01)  # the reference's heads here are N(0, 0.01)
    return net


@register_model
def preactresnet18(**kwargs: int) -> MixMoNet:
    """PreActResNet-18 (w=1), the Tiny ImageNet reference backbone."""
    return build_preact_resnet18(1, **kwargs)


@register_model
def preactresnet18_2(**kwargs: int) -> MixMoNet:
    """PreActResNet-18-2: twice the channels of PreActResNet-18."""
    return build_preact_resnet18(2, **kwargs)


@register_model
def preactresnet18_3(**kwargs: int) -> MixMoNet:
    """PreActResNet-18-3: three times the channels of PreActResNet-18."""
    return build_preact_resnet18(3, **kwargs)
