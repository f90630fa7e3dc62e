"""Wide ResNet WRN-d-w (Zagoruyko & Komodakis 2016) as a MixMoNet, with its entry points."""

from __future__ import annotations

from mixmo_search.models.mixmo import MixMoNet
from mixmo_search.models.preact_resnet import build_preact_net
from mixmo_search.models.registry import register_model


def _wide_resnet(depth: int, width: int, **kwargs: int) -> MixMoNet:
    # spec §Architectures: 16-channel 3x3 stem, three groups of (d-4)/6 pre-activation wide
    # blocks at 16w/32w/64w with strides 1, 2, 2.
    if (depth - 4) % 6 != 0:
        raise ValueError(f"WRN depth must be 6n+4 (e.g. 16, 28); got {depth}")
    return build_preact_net(
        stem_width=16,
        widths=[16 * width, 32 * width, 64 * width],
        blocks_per_stage=(depth - 4) // 6,
        strides=[1, 2, 2],
        **kwargs,
    )


@register_model
def wrn28_10(**kwargs: int) -> MixMoNet:
    """WRN-28-10, the CIFAR reference backbone (~36.5M parameters at M=2)."""
    return _wide_resnet(28, 10, **kwargs)


@register_model
def wrn28_2(**kwargs: int) -> MixMoNet:
    """WRN-28-2: the reference depth at width 2 (~1.5M parameters)."""
    return _wide_resnet(28, 2, **kwargs)


@register_model
def wrn16_4(**kwargs: int) -> MixMoNet:
    """WRN-16-4 (~2.7M parameters)."""
    return _wide_resnet(16, 4, **kwargs)


@register_model
def wrn16_2(**kwargs: int) -> MixMoNet:
    """WRN-16-2 (~0.7M parameters)."""
    return _wide_resnet(16, 2, **kwargs)


@register_model
def wrn10_1(**kwargs: int) -> MixMoNet:
    """WRN-10-1, a tiny model for CPU recipes and tests (~0.08M parameters)."""
    return _wide_resnet(10, 1, **kwargs)
