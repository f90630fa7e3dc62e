"""Optuna samplers by name: the `sampler:` block of a search space becomes a seeded sampler.

tpe, random, gp and nsga2 handle one or several objectives; cmaes handles one (and draws
categorical params at random); grid enumerates the categorical and int params. cmaes needs
`pip install cmaes`; gp needs scipy and torch. The rules live in `space.check_sampler`, so a
bad sampler fails when the space loads, before any trial runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mixmo_search.search.space import (
    SAMPLER_OPTIONS,
    Param,
    SamplerSpec,
    SearchSpace,
    check_sampler,
)

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

SAMPLERS = tuple(SAMPLER_OPTIONS)


def make_sampler(
    spec: SamplerSpec, n_objectives: int, *, params: Sequence[Param] = ()
) -> BaseSampler:
    """A seeded Optuna sampler for `spec`; grid enumerates `params` (fixed ones excluded)."""
    check_sampler(spec, n_objectives, params)
    import optuna  # heavy; only the search needs it

    seed, options = spec.seed, spec.options
    if spec.type == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **options)
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.type == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **options)
    if spec.type == "gp":
        return optuna.samplers.GPSampler(seed=seed, **options)
    if spec.type == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **options)
    grid = {p.key: p.grid_values() for p in params if p.type != "fixed"}
    return optuna.samplers.GridSampler(grid, seed=seed)


def sampler_for(space: SearchSpace) -> BaseSampler:
    """The sampler a loaded search space asks for."""
    return make_sampler(space.sampler, space.n_objectives, params=space.params)
