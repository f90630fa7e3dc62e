"""The search: YAML spaces and Optuna samplers; Ray runs the trials, MLflow records them."""

from __future__ import annotations

from mixmo_search.search.samplers import SAMPLERS, make_sampler, sampler_for
from mixmo_search.search.space import SearchSpace, load_space
from mixmo_search.search.types import (
    Budget,
    Objective,
    Param,
    Resources,
    SamplerSpec,
    SchedulerSpec,
    SpaceError,
    SpaceWarning,
)

__all__ = [
    "SAMPLERS",
    "Budget",
    "Objective",
    "Param",
    "Resources",
    "SamplerSpec",
    "SchedulerSpec",
    "SearchSpace",
    "SpaceError",
    "SpaceWarning",
    "load_space",
    "make_sampler",
    "sampler_for",
]
