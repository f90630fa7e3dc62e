"""Models by name: one dict from entry-point name to builder (style rule 6, timm-like)."""

from __future__ import annotations

from collections.abc import Callable

from mixmo_search.errors import UnknownModel
from mixmo_search.models.mixmo import MixMoNet

ModelBuilder = Callable[..., MixMoNet]

_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(build: ModelBuilder) -> ModelBuilder:
    """Register `build` under its function name; a name registered twice is a bug."""
    if build.__name__ in _BUILDERS:
        raise ValueError(f"model name {build.__name__!r} is registered twice")
    _BUILDERS[build.__name__] = build
    return build


def create_model(
    name: str, *, n_members: int, num_classes: int, in_channels: int = 3, stem_stride: int = 1
) -> MixMoNet:
    """Build the registered model `name` with M = `n_members` encoders and heads."""
    if name not in _BUILDERS:
        raise UnknownModel(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _BUILDERS[name](
        n_members=n_members,
        num_classes=num_classes,
        in_channels=in_channels,
        stem_stride=stem_stride,
    )


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_BUILDERS)
