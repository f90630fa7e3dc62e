"""Search spaces: a YAML file in `search_spaces/` becomes a validated `SearchSpace`.

Schema (every key but `base`, `params`, `objective` and `budget` is optional)::

    name: cutmix-cifar100          # search name; default: the file's stem
    description: free text
    base:                          # the training config every trial starts from
      preset: cifar100_cut_mixmo   # a name from `mixmo_search.config.list_presets()`
      overrides: {optim.epochs: 300}   # flat `section.key: value`
    params:                        # flat `section.key` -> how the sampler draws it
      mixing.p:     {type: uniform, low: 0.0, high: 1.0, when: {mixing.block: [cut, cow]}}
      optim.lr:     {type: loguniform, low: 0.05, high: 0.2}
      model.n_members: {type: int, low: 2, high: 3}       # optional step (default 1), log
      mixing.alpha: {type: categorical, choices: [0, 1, 2, 4]}
      mixing.block: {type: fixed, value: cut}             # set in every trial, not searched
    objective:                     # one entry, or several for a multi-objective search
      - {metric: val/acc, mode: max}
    guard: {metric: val/acc, mode: max}   # the one metric asha stops on
    sampler: {type: tpe, seed: 0}  # tpe | random | cmaes | gp | nsga2 | grid, + options
    scheduler: {type: asha, grace_period: 1, reduction_factor: 4}   # fifo | asha (+ max_t)
    budget: {trials: 20, time: 2h} # trials and/or wall time (seconds, or 30s / 45m / 2h / 1d)
    resources: {gpus: 1, cpus: 4}  # per trial; gpus may be a fraction (0.5) to share a GPU

Conditions: `when: {key: [values]}` draws a param only when every listed key takes one of
its values; otherwise the base config's value stays. A condition's key is a searched
categorical, int or fixed param, or a base-config key. Metrics are `val/...` or `train/...`:
the test split only reports (docs/method.md §Protocols), so no search may select on it.

Defaults: sampler `{type: tpe, seed: 0}`, scheduler `{type: fifo}`, resources
`{gpus: 0, cpus: 1}`; asha's `max_t` is the base `optim.epochs` (or the largest searched
value) and its `guard` is the objective when there is only one; a grid search's `trials`
defaults to the grid's size. Every value a param can draw is applied to the base config at
load time, alone and beside the other params' values, and each network shape is built
(`space_check`), so config rules (ranges, batch_size % batch_repeat, a kernel larger than the
images) fail before anything runs. Every mistake raises `SpaceError` naming the file, line,
key, what is allowed and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixmo_search.config import ConfigBuilder, TrainConfig
from mixmo_search.search import samplers, schema
from mixmo_search.search.space_check import SpaceCheck, check_space
from mixmo_search.search.types import (
    Budget,
    Objective,
    Param,
    Resources,
    SamplerSpec,
    SchedulerSpec,
    SpaceError,
    drawn,
)

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class SearchSpace:
    """A validated search: the base config, the params and how to search them."""

    path: Path
    name: str
    description: str
    preset: str | None
    overrides: dict[str, Any]  # flat base overrides, as the file gives them
    base: ConfigBuilder  # the resolved base config; trial configs are built on it
    base_values: dict[str, Any]  # the flat resolved base config (conditions read it)
    params: tuple[Param, ...]  # ordered so a condition's key comes before its params
    objectives: tuple[Objective, ...]
    guard: Objective | None  # the one metric asha stops on; None for multi-objective fifo
    sampler: SamplerSpec
    scheduler: SchedulerSpec
    budget: Budget
    resources: Resources
    check: SpaceCheck  # what checking every drawable value built

    @property
    def n_objectives(self) -> int:
        return len(self.objectives)

    def metric_modes(self) -> tuple[list[str], list[str]]:
        """`(metrics, modes)` in objective order, the form Ray's OptunaSearch takes."""
        return [o.metric for o in self.objectives], [o.mode for o in self.objectives]

    def define_by_run(self, trial: optuna.Trial) -> dict[str, Any]:
        """Draw one trial's params; returns its flat overrides, fixed params included."""
        return drawn(self.params, lambda param: param.suggest(trial), self.base_values)

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """{key: distribution} of the searched (not fixed) params."""
        return {p.key: p.distribution() for p in self.params if p.type != "fixed"}

    def base_config(self) -> TrainConfig:
        return self.base.build()

    def trial_config(self, overrides: Mapping[str, Any]) -> TrainConfig:
        """The base config with a trial's overrides; a ConfigError names the bad key."""
        return self.base.build(overrides)


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space file; raises SpaceError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"search-space file {path} does not exist; see search_spaces/")
    raw, where = schema.parse_document(path)
    name = schema.parse_name(raw.get("name", path.stem), where)
    preset, overrides, base = schema.parse_base(raw["base"], where)
    base_values = base.build().flat()
    params = schema.parse_params(raw["params"], base_values, where)
    check = check_space(params, base, base_values, where)
    objectives = schema.parse_objectives(raw["objective"], where)
    sampler = schema.parse_sampler(raw.get("sampler", {}), where)
    samplers.check_sampler(sampler, len(objectives), params, where=where)
    directions = ["maximize" if o.mode == "max" else "minimize" for o in objectives]
    samplers.exercise_sampler(
        sampler,
        directions,
        params,
        lambda t: drawn(params, lambda p: p.suggest(t), base_values),
        where=where,
    )
    scheduler = schema.parse_scheduler(raw.get("scheduler", {}), base_values, params, where)
    guard = schema.parse_guard(raw.get("guard"), objectives, scheduler, where)
    schema.check_metric_sources([*objectives, guard], base.build(), where)
    return SearchSpace(
        path=path, name=name, description=str(raw.get("description", "")), preset=preset,
        overrides=overrides, base=base, base_values=base_values, params=params,
        objectives=objectives, check=check,
        guard=guard, sampler=sampler, scheduler=scheduler,
        budget=schema.parse_budget(raw["budget"], sampler, params, where),
        resources=schema.parse_resources(raw.get("resources", {}), base_values, where),
    )  # fmt: skip
