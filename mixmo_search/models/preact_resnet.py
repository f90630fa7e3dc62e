"""Pre-activation ResNets as MixMoNets: the shared builder, and PreActResNet-18-w entry points.

The Wide ResNet family (`wrn.py`) is the same network with three wide stages, so it reuses
`build_preact_net` from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from mixmo_search.models.mixmo import MixMoNet
from mixmo_search.models.registry import register_model


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus shortcut.

    When the shape changes the shortcut is a 1x1 conv of the pre-activated input (He et al.
    2016; Zagoruyko & Komodakis's wide basic block is the same block, wider).
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
        pre = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + skip


def _preact_core(
    in_channels: int, widths: Sequence[int], blocks_per_stage: int, strides: Sequence[int]
) -> nn.Sequential:
    """Stages of pre-activation blocks, then BN-ReLU, global average pool and flatten."""
    blocks: list[nn.Module] = []
    for width, stage_stride in zip(widths, strides, strict=True):
        for i in range(blocks_per_stage):
            blocks.append(PreActBlock(in_channels, width, stage_stride if i == 0 else 1))
            in_channels = width
    return nn.Sequential(
        *blocks,
        nn.BatchNorm2d(in_channels),  # the blocks end on a conv: pre-activate the features
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # (B, widths[-1])
    )


def _init_weights(net: nn.Module) -> None:
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)


def build_preact_net(
    *,
    stem_width: int,
    widths: Sequence[int],
    blocks_per_stage: int,
    strides: Sequence[int],
    n_members: int,
    num_classes: int,
    in_channels: int = 3,
    stem_stride: int = 1,
) -> MixMoNet:
    """A MixMoNet whose encoders are 3x3 stem convs and whose core is a pre-act ResNet."""
    encoders = [
        nn.Conv2d(in_channels, stem_width, 3, stem_stride, padding=1, bias=False)
        for _ in range(n_members)
    ]
    core = _preact_core(stem_width, widths, blocks_per_stage, strides)
    net = MixMoNet(encoders=encoders, core=core, feature_dim=widths[-1], num_classes=num_classes)
    _init_weights(net)
    return net


def _preact_resnet18(width: int, **kwargs: int) -> MixMoNet:
    # spec §Architectures: 64-channel stem (stride 2 on Tiny ImageNet, set by stem_stride),
    # four stages of two blocks at 64w/128w/256w/512w.
    return build_preact_net(
        stem_width=64,
        widths=[64 * width, 128 * width, 256 * width, 512 * width],
        blocks_per_stage=2,
        strides=[1, 2, 2, 2],
        **kwargs,
    )


@register_model
def preactresnet18(**kwargs: int) -> MixMoNet:
    """PreActResNet-18 (w=1), the Tiny ImageNet reference backbone."""
    return _preact_resnet18(1, **kwargs)


@register_model
def preactresnet18_2(**kwargs: int) -> MixMoNet:
    """PreActResNet-18-2: twice the channels of PreActResNet-18."""
    return _preact_resnet18(2, **kwargs)


@register_model
def preactresnet18_3(**kwargs: int) -> MixMoNet:
    """PreActResNet-18-3: three times the channels of PreActResNet-18."""
    return _preact_resnet18(3, **kwargs)
