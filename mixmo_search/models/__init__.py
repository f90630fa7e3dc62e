"""Model zoo: MixMoNet over registered cores, built by name (`create_model`)."""

from __future__ import annotations

from mixmo_search.models import preact_resnet, wrn  # noqa: F401  (registers the entry points)
from mixmo_search.models.mixmo import MixMoNet
from mixmo_search.models.registry import create_model, list_models, register_model

__all__ = ["MixMoNet", "create_model", "list_models", "register_model"]
