"""Optuna samplers by name: the `sampler:` block of a search space becomes a seeded sampler.

tpe, random, gp and nsga2 handle one or several objectives; cmaes handles one (and draws
categorical params at random); grid enumerates the categorical and int params. cmaes needs
`pip install cmaes`; gp needs scipy and torch. The rules live in `schema.check_sampler`, so a
bad sampler fails when the space loads, before any trial runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna

from mixmo_search.search.schema import SAMPLER_OPTIONS, check_sampler
from mixmo_search.search.space import Param, SamplerSpec, SearchSpace

SAMPLERS = tuple(SAMPLER_OPTIONS)


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler that does not call `study.stop()` once the grid is done.

    Ray drives Optuna by ask/tell, where `stop()` raises (Ray logs it as a warning); the
    search's budget, `trials` = grid size by default, ends the search instead.
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


def make_sampler(
    spec: SamplerSpec, n_objectives: int, *, params: Sequence[Param] = ()
) -> optuna.samplers.BaseSampler:
    """A seeded Optuna sampler for `spec`; grid enumerates `params` (fixed ones excluded)."""
    check_sampler(spec, n_objectives, params)
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
    return AskTellGridSampler(grid, seed=seed)


def sampler_for(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The sampler a loaded search space asks for."""
    return make_sampler(space.sampler, space.n_objectives, params=space.params)
