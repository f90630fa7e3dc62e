"""Optuna samplers by name: the `sampler:` block of a search space becomes a seeded sampler.

tpe, random, gp and nsga2 handle one or several objectives; cmaes handles one (and draws
categorical params at random); grid enumerates the categorical and int params. The options a
space may pass are read from each Optuna sampler's own signature (scalar arguments that its
documentation does not mark deprecated), and `check_sampler` holds the rules that tie a
sampler to a space, so a bad sampler fails when the space loads, before any trial runs.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING

import optuna

from mixmo_search.search.fields import Where, check_fields, one_of, plain, typed, warn
from mixmo_search.search.types import Param, SamplerSpec, SpaceError

if TYPE_CHECKING:
    from mixmo_search.search.space import SearchSpace

CLASSES: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "grid": optuna.samplers.GridSampler,
}
SAMPLERS = tuple(CLASSES)
MAX_GRID = 100_000  # points a grid search may enumerate
PACKAGES: dict[str, tuple[str, ...]] = {"cmaes": ("cmaes",), "gp": ("scipy", "torch")}
_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


@cache
def options(sampler: str) -> dict[str, type]:
    """{option: type} a space may set for `sampler`: the constructor's arguments of a plain
    type (not callables, samplers or trials), without `seed` and deprecated ones."""
    cls = CLASSES[sampler]
    doc = inspect.getdoc(cls) or ""
    found: dict[str, type] = {}
    for name, arg in inspect.signature(cls.__init__).parameters.items():
        kind = _SCALARS.get(str(arg.annotation).removesuffix(" | None"))
        entry = re.search(rf"^ {{0,8}}{name}:\n(.*?)(?=^ {{0,8}}\w+:\n|\Z)", doc, re.M | re.S)
        deprecated = entry is not None and "Deprecated" in entry[1]
        if kind is not None and name != "seed" and not deprecated:
            found[name] = kind
    return found


def check_sampler(
    spec: SamplerSpec, n_objectives: int, params: Sequence[Param], *, where: Where = plain
) -> None:
    """Rules tying a sampler to the objectives and params; warns where it would run poorly."""
    at = where("sampler", "type")
    one_of(spec.type, list(SAMPLERS), at, "sampler")
    allowed = options(spec.type)
    check_fields(spec.options, [*allowed, "type", "seed"], where, "sampler")
    for option, value in spec.options.items():
        # every int option of Optuna's samplers is a count (trials, candidates, a population)
        low = 0 if allowed[option] is int else None
        typed(value, allowed[option], where("sampler", option), low=low)
    missing = [p for p in PACKAGES.get(spec.type, ()) if not importlib.util.find_spec(p)]
    if missing:
        raise SpaceError(
            f"{at}: sampler {spec.type} needs {', '.join(missing)}; run "
            f"`pip install {' '.join(missing)}` or choose tpe"
        )
    if spec.type == "cmaes" and n_objectives > 1:
        raise SpaceError(
            f"{at}: cmaes optimises one objective, this space has {n_objectives}; "
            "use nsga2, tpe or gp, or keep one objective"
        )
    if spec.type == "tpe" and spec.options.get("group") and not spec.options.get("multivariate"):
        raise SpaceError(
            f"{where('sampler', 'group')}: tpe's `group: true` needs "
            "`multivariate: true`; add it or drop `group`"
        )
    searched = [p for p in params if p.type != "fixed"]
    for p in searched if spec.type == "grid" else ():
        if p.type in ("uniform", "loguniform"):
            raise SpaceError(
                f"{where('params', p.key, 'type')}: the grid sampler needs finite "
                f"values, not {p.type}; list them as categorical, make it int, or "
                "use tpe/random"
            )
        if p.when:
            raise SpaceError(
                f"{where('params', p.key, 'when')}: the grid sampler runs every "
                "combination, so a conditional param repeats identical trials; "
                "drop the `when` or use tpe/random"
            )
    size = math.prod(p.count() for p in searched)
    if spec.type == "grid" and size > MAX_GRID:
        raise SpaceError(
            f"{where('params')}: the grid has {size:.3g} points, more than a grid search can "
            f"enumerate ({MAX_GRID}); narrow the int ranges or raise their `step`, or use "
            "tpe/random"
        )
    if spec.type == "cmaes" and any(p.type == "categorical" for p in searched):
        warn(f"{at}: cmaes draws categorical params at random; tpe or gp model them")
    if spec.type in ("cmaes", "gp") and any(p.when for p in searched):
        warn(f"{at}: {spec.type} draws conditional params at random; tpe models them")
    if spec.type == "nsga2" and n_objectives == 1:
        warn(f"{at}: nsga2 on one objective is a plain genetic algorithm; tpe needs fewer trials")


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
    return _construct(spec, params)


def _construct(spec: SamplerSpec, params: Sequence[Param]) -> optuna.samplers.BaseSampler:
    if spec.type == "grid":
        grid = {p.key: p.grid_values() for p in params if p.type != "fixed"}
        return AskTellGridSampler(grid, seed=spec.seed)
    return CLASSES[spec.type](seed=spec.seed, **spec.options)


EXERCISE_LIMIT = 64  # trials a sampler proposes in its check


def exercise_sampler(
    spec: SamplerSpec,
    directions: Sequence[str],
    params: Sequence[Param],
    draw: Callable[[optuna.Trial], object],
    *,
    where: Where = plain,
) -> None:
    """Construct the sampler and let it propose trials in an in-memory study, told seeded
    random values, past its start-up phase: options Optuna accepts when built but fails on
    later (`n_ei_candidates: 0`, a population of one) fail now, not in the search."""
    import random
    import warnings

    at = where("sampler")
    try:
        sampler = _construct(spec, params)
    except (ValueError, TypeError) as err:
        raise SpaceError(f"{at}: Optuna refuses these options: {err}; fix them") from None
    rng = random.Random(0)
    n_trials = min(EXERCISE_LIMIT, _warmup(spec) + 2)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental samplers say so at each trial
        study = optuna.create_study(sampler=sampler, directions=list(directions))
        for _ in range(n_trials):
            try:
                trial = study.ask()
                draw(trial)
            except (ValueError, TypeError, RuntimeError) as err:
                raise SpaceError(
                    f"{at}: the {spec.type} sampler fails with these options after "
                    f"{len(study.trials) - 1} trials: {err}; fix the options"
                ) from None
            study.tell(trial, [rng.random() for _ in directions])
    optuna.logging.set_verbosity(verbosity)


def _warmup(spec: SamplerSpec) -> int:
    """Trials before the sampler starts modelling: its start-up trials or first population."""
    defaults = {
        name: arg.default
        for name, arg in inspect.signature(CLASSES[spec.type].__init__).parameters.items()
    }
    for option in ("population_size", "n_startup_trials"):
        if option in defaults:
            value = spec.options.get(option, defaults[option])
            return value if isinstance(value, int) else 0
    return 1


def sampler_for(space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The sampler a loaded search space asks for."""
    return make_sampler(space.sampler, space.n_objectives, params=space.params)
