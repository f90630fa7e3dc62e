"""The parts of a search space, each checked by `schema.py` when the file loads.

`space.py` puts them together as a `SearchSpace`; the YAML format is documented there and in
search_spaces/README.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mixmo_search.errors import UserError

if TYPE_CHECKING:
    import optuna


class SpaceError(UserError):
    """A search-space file is malformed or asks for something the platform cannot run."""


class SpaceWarning(UserWarning):
    """A search space that runs, but probably not the way its author meant."""


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) training-config key."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    step: int = 1
    log: bool = False
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def extremes(self) -> tuple[Any, ...]:
        """The values that bound what a trial may get; each is checked against the config."""
        if self.type == "categorical":
            return self.choices
        if self.type == "fixed":
            return (self.value,)
        return (self.low, self.high)

    def count(self) -> float:
        """How many values the param can draw (inf for a float range)."""
        if self.type == "int":
            return (int(self.high) - int(self.low)) // self.step + 1
        return len(self.extremes()) if self.type in ("categorical", "fixed") else math.inf

    def grid_values(self) -> list[Any]:
        """Every value of a finite param (grid search); continuous types have none."""
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, self.step))
        if self.type in ("categorical", "fixed"):
            return list(self.extremes())
        raise ValueError(f"`{self.key}` is {self.type}: it has no finite grid")

    def probes(self, limit: int) -> tuple[Any, ...]:
        """Values to check the param at: every value it can draw when there are at most
        `limit`, else both ends and evenly spread values between (geometrically for log
        scales); a float range at its ends and middle."""
        if self.type in ("categorical", "fixed"):
            return self.extremes()
        if self.type == "int" and self.count() <= limit:
            return tuple(self.grid_values())
        low, high = self.low, self.high
        n = 3 if self.type != "int" else max(2, limit)
        if self.log or self.type == "loguniform":
            spread = [low * (high / low) ** (i / (n - 1)) for i in range(n)]
        else:
            spread = [low + (high - low) * i / (n - 1) for i in range(n)]
        if self.type != "int":
            return tuple(dict.fromkeys([low, *spread[1:-1], high]))
        lattice = [int(low) + round((v - low) / self.step) * self.step for v in spread]
        return tuple(dict.fromkeys([int(low), *lattice[1:-1], int(high)]))

    def admits(self, value: Any) -> bool:
        if self.type != "int":
            return value in self.extremes()
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and self.low <= value <= self.high and (value - self.low) % self.step == 0

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution `suggest` draws from (searched types only)."""
        from optuna import distributions as dist

        if self.type in ("uniform", "loguniform"):
            return dist.FloatDistribution(self.low, self.high, log=self.type == "loguniform")
        if self.type == "int":
            return dist.IntDistribution(
                int(self.low), int(self.high), log=self.log, step=self.step
            )
        if self.type == "categorical":
            return dist.CategoricalDistribution(self.choices)
        raise ValueError(f"`{self.key}` is fixed: it has no distribution")

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type in ("uniform", "loguniform"):
            return trial.suggest_float(self.key, self.low, self.high, log=self.type != "uniform")
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step, log=self.log)
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        return self.value


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # "min" | "max"


@dataclass(frozen=True)
class SamplerSpec:
    type: str = "tpe"
    seed: int | None = 0  # a search is reproducible unless the file says `seed: null`
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SchedulerSpec:
    type: str = "fifo"
    grace_period: int = 1  # epochs before asha may stop a trial
    reduction_factor: float = 4  # Ray's default: a rung promotes the top 1/4
    max_t: int = 1  # epochs of the longest trial


@dataclass(frozen=True)
class Budget:
    trials: int | None = None
    time_s: float | None = None  # wall-clock seconds for the whole search


@dataclass(frozen=True)
class Resources:
    gpus: float = 0
    cpus: float = 1


def drawn(
    params: Sequence[Param], choose: Callable[[Param], Any], base_values: Mapping[str, Any]
) -> dict[str, Any]:
    """The values one trial gets: each param in order (conditions' keys first) that its
    `when` lets be drawn, with `choose(param)`; the others keep the base config's value.
    The sampler (`SearchSpace.define_by_run`) and the space's checks both draw through it."""
    values: dict[str, Any] = {}
    for param in params:
        if all(
            values.get(key, base_values[key]) in allowed for key, allowed in param.when.items()
        ):
            values[param.key] = choose(param)
    return values
