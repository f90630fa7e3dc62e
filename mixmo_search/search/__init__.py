"""The search: YAML spaces, Optuna samplers and Pareto fronts (Ray runs the trials)."""

from __future__ import annotations

from mixmo_search.search.pareto import knee_point, pareto_front
from mixmo_search.search.samplers import SAMPLERS, make_sampler, sampler_for
from mixmo_search.search.space import (
    Budget,
    Objective,
    Param,
    Resources,
    SamplerSpec,
    SchedulerSpec,
    SearchSpace,
    SpaceError,
    SpaceWarning,
    load_space,
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
    "knee_point",
    "load_space",
    "make_sampler",
    "pareto_front",
    "sampler_for",
]
