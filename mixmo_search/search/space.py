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
the test split only reports (spec §Metrics), so no search may select on it.

Defaults: sampler `{type: tpe, seed: 0}`, scheduler `{type: fifo}`, resources
`{gpus: 0, cpus: 1}`; asha's `max_t` is the base `optim.epochs` (or the largest searched
value) and its `guard` is the objective when there is only one; a grid search's `trials`
defaults to the grid's size. Each param's bounds or choices are applied to the base config
at load time, so config rules (ranges, batch_size % batch_repeat) fail before anything runs.
Every mistake raises `SpaceError` naming the file, line, key, what is allowed and the fix.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

import yaml

from mixmo_search.config import SECTIONS, TrainConfig, list_presets, resolve_config
from mixmo_search.errors import ConfigError, UserError

if TYPE_CHECKING:
    import optuna


class SpaceError(UserError):
    """A search-space file is malformed or asks for something the platform cannot run."""


class SpaceWarning(UserWarning):
    """A search space that runs, but probably not the way its author meant."""


TOP_KEYS = (
    "name", "description", "base", "params", "objective", "guard", "sampler", "scheduler",
    "budget", "resources",
)  # fmt: skip
REQUIRED_KEYS = ("base", "params", "objective", "budget")
# type -> (required fields, optional fields); `type` itself is implied
PARAM_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "uniform": (("low", "high"), ("when",)),
    "loguniform": (("low", "high"), ("when",)),
    "int": (("low", "high"), ("step", "log", "when")),
    "categorical": (("choices",), ("when",)),
    "fixed": (("value",), ("when",)),
}
# Options a YAML file may pass to each Optuna sampler (callables and deprecated ones left out)
SAMPLER_OPTIONS: dict[str, dict[str, type]] = {
    "tpe": {
        "n_startup_trials": int, "n_ei_candidates": int, "multivariate": bool, "group": bool,
        "constant_liar": bool, "prior_weight": float, "consider_endpoints": bool,
    },
    "random": {},
    "cmaes": {
        "n_startup_trials": int, "sigma0": float, "popsize": int, "use_separable_cma": bool,
        "with_margin": bool, "lr_adapt": bool, "consider_pruned_trials": bool,
    },
    "gp": {"n_startup_trials": int, "deterministic_objective": bool},
    "nsga2": {
        "population_size": int, "mutation_prob": float, "crossover_prob": float,
        "swapping_prob": float,
    },
    "grid": {},
}  # fmt: skip
SAMPLER_PACKAGES: dict[str, tuple[str, ...]] = {"cmaes": ("cmaes",), "gp": ("scipy", "torch")}
SCHEDULER_OPTIONS: dict[str, dict[str, type]] = {
    "fifo": {},
    "asha": {"grace_period": int, "reduction_factor": float, "max_t": int},
}
CONDITION_TYPES = ("categorical", "int", "fixed")
METRIC_PATTERN = re.compile(r"(train|val)/[A-Za-z0-9_.]+")
TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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

    def grid_values(self) -> list[Any]:
        """Every value of a finite param (grid search); continuous types have none."""
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, self.step))
        if self.type in ("categorical", "fixed"):
            return list(self.extremes())
        raise ValueError(f"`{self.key}` is {self.type}: it has no finite grid")

    def admits(self, value: Any) -> bool:
        if self.type != "int":
            return value in self.extremes()
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and self.low <= value <= self.high and (value - self.low) % self.step == 0

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


@dataclass(frozen=True)
class SearchSpace:
    """A validated search: the base config, the params and how to search them."""

    path: Path
    name: str
    description: str
    preset: str | None
    overrides: dict[str, Any]  # flat base overrides
    base_values: dict[str, Any]  # the flat resolved base config (conditions read it)
    params: tuple[Param, ...]  # ordered so a condition's key comes before its params
    objectives: tuple[Objective, ...]
    guard: Objective | None  # the one metric asha stops on; None for multi-objective fifo
    sampler: SamplerSpec
    scheduler: SchedulerSpec
    budget: Budget
    resources: Resources

    @property
    def n_objectives(self) -> int:
        return len(self.objectives)

    def metric_modes(self) -> tuple[list[str], list[str]]:
        """`(metrics, modes)` in objective order, the form Ray's OptunaSearch takes."""
        return [o.metric for o in self.objectives], [o.mode for o in self.objectives]

    def define_by_run(self, trial: optuna.Trial) -> dict[str, Any]:
        """Draw one trial's params; returns its flat overrides, fixed params included."""
        values: dict[str, Any] = {}
        for param in self.params:
            if all(
                values.get(key, self.base_values[key]) in allowed
                for key, allowed in param.when.items()
            ):
                values[param.key] = param.suggest(trial)
        return values

    def base_config(self) -> TrainConfig:
        return resolve_config(preset=self.preset, overrides=self.overrides)

    def trial_config(self, overrides: Mapping[str, Any]) -> TrainConfig:
        """The base config with a trial's overrides; a ConfigError names the bad key."""
        return resolve_config(preset=self.preset, overrides={**self.overrides, **overrides})


Where = Callable[..., str]  # key path -> "file:line: `a.b`", the prefix of every SpaceError


def _locator(path: Path, lines: dict[tuple[Any, ...], int]) -> Where:
    def where(*keys: Any) -> str:
        dotted = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
        for n in range(len(keys), 0, -1):
            if keys[:n] in lines:  # the key itself, else the closest enclosing one
                return f"{path}:{lines[keys[:n]]}: `{dotted}`"
        return f"{path}: `{dotted}`"

    return where


def _plain(*keys: Any) -> str:
    return "`" + ".".join(map(str, keys)) + "`"


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space file; raises SpaceError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"search-space file {path} does not exist; see search_spaces/")
    text = path.read_text()
    try:
        lines = _key_lines(path, yaml.compose(text, Loader=yaml.SafeLoader))
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark, opened = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
        at = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or err
        # PyYAML marks the token after the mistake; an unclosed bracket shows where it opened
        context = f" {err.context} at line {opened.line + 1}" if opened else ""
        raise SpaceError(f"{at}: not valid YAML ({problem}{context}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: must be a mapping with {', '.join(REQUIRED_KEYS)}; got {raw!r}")
    where = _locator(path, lines)
    _check_fields(raw, TOP_KEYS, where)
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise SpaceError(f"{path}: missing top-level key `{key}`; see search_spaces/README.md")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SpaceError(
            f"{where('name')}: use letters, digits, `_`, `.`, `-` (it names the "
            f"MLflow experiment and the Ray folder); got {name!r}"
        )

    preset, overrides, base_values = _parse_base(raw["base"], where)
    params = _parse_params(raw["params"], base_values, where)
    _check_extremes(params, preset, overrides, where)
    objectives = _parse_objectives(raw["objective"], where)
    sampler = _parse_sampler(raw.get("sampler", {}), where)
    check_sampler(sampler, len(objectives), params, where=where)
    scheduler = _parse_scheduler(raw.get("scheduler", {}), base_values, params, where)
    guard = _parse_guard(raw.get("guard"), objectives, scheduler, where)
    return SearchSpace(
        path=path, name=name, description=str(raw.get("description", "")), preset=preset,
        overrides=overrides, base_values=base_values, params=params, objectives=objectives,
        guard=guard, sampler=sampler, scheduler=scheduler,
        budget=_parse_budget(raw["budget"], sampler, params, where),
        resources=_parse_resources(raw.get("resources", {}), base_values, where),
    )  # fmt: skip


def check_sampler(
    spec: SamplerSpec, n_objectives: int, params: Sequence[Param], *, where: Where = _plain
) -> None:
    """Rules tying a sampler to the objectives and params; warns where it would run poorly."""
    at = where("sampler", "type")
    _choice(spec.type, list(SAMPLER_OPTIONS), at, "sampler")
    allowed = SAMPLER_OPTIONS[spec.type]
    _check_fields(spec.options, [*allowed, "type", "seed"], where, "sampler")
    for option, value in spec.options.items():
        _typed(value, allowed[option], where("sampler", option))
    missing = [p for p in SAMPLER_PACKAGES.get(spec.type, ()) if not importlib.util.find_spec(p)]
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
    if spec.type == "cmaes" and any(p.type == "categorical" for p in searched):
        _warn(f"{at}: cmaes draws categorical params at random; tpe or gp model them")
    if spec.type in ("cmaes", "gp") and any(p.when for p in searched):
        _warn(f"{at}: {spec.type} draws conditional params at random; tpe models them")
    if spec.type == "nsga2" and n_objectives == 1:
        _warn(f"{at}: nsga2 on one objective is a plain genetic algorithm; tpe needs fewer trials")


def _warn(message: str) -> None:
    warnings.warn(message, SpaceWarning, stacklevel=3)


def _key_lines(path: Path, node: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """1-based line of every key path; refuses duplicate keys, which safe_load hides."""
    lines: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                keys, line = (*prefix, key_node.value), key_node.start_mark.line + 1
                if keys in lines:
                    raise SpaceError(
                        f"{path}:{line}: `{'.'.join(map(str, keys))}` appears "
                        f"twice (first at line {lines[keys]}); keep one"
                    )
                lines[keys] = line
                walk(value_node, keys)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*prefix, i)] = item.start_mark.line + 1
                walk(item, (*prefix, i))

    if node is not None:
        walk(node, ())
    return lines


def _did_you_mean(value: Any, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=3)
    return f"did you mean {' or '.join(f'`{c}`' for c in close)}? " if close else ""


def _choice(value: Any, allowed: Sequence[str], where: str, what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SpaceError(
            f"{where}: unknown {what} {value!r}; {_did_you_mean(value, allowed)}"
            f"choose one of: {', '.join(allowed) or '(none yet)'}"
        )
    return value


def _check_fields(
    mapping: Mapping[Any, Any], allowed: Sequence[str], where: Where, *keys: Any
) -> None:
    for key in mapping:
        if key not in allowed:
            inside = f"in `{'.'.join(map(str, keys))}`" if keys else "at the top level"
            raise SpaceError(
                f"{where(*keys, key)}: unknown key {key!r}; "
                f"{_did_you_mean(key, allowed)}allowed {inside}: "
                f"{', '.join(allowed)}"
            )


def _mapping(value: Any, where: str, example: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise SpaceError(f"{where}: must be a mapping such as {example}; got {value!r}")
    return value


def _typed(value: Any, typ: type, where: str, *, low: float | None = None) -> Any:
    """`value` as a `typ` that is >= low (ints count as floats, bools as neither)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if typ is float and number and not math.isnan(value):
        value = float(value)
    elif typ is int and number and float(value).is_integer():
        value = int(value)
    elif typ not in (bool, str) or not isinstance(value, typ):
        names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
        raise SpaceError(f"{where}: must be {names[typ]}; got {value!r}")
    if low is not None and value < low:
        raise SpaceError(f"{where}: must be >= {low}; got {value:g}")
    return value


def _config_key(key: Any, where: str) -> str:
    """`key` if it names a TrainConfig field, else a SpaceError listing its section's keys."""
    keys = list(TrainConfig().flat())
    if key in keys:
        return key
    section, _, name = str(key).rpartition(".")
    siblings = [k.split(".", 1)[1] for k in keys if k.startswith(f"{section}.")]
    if not siblings:
        raise SpaceError(
            f"{where}: {key!r} is not a training-config key; {_did_you_mean(key, keys)}"
            f"keys are section.name with sections: {', '.join(SECTIONS)}"
        )
    close = [f"{section}.{c}" for c in difflib.get_close_matches(name, siblings, n=3)]
    raise SpaceError(
        f"{where}: {key!r} is not a training-config key; {_did_you_mean(key, close)}"
        f"keys in `{section}`: {', '.join(siblings)}"
    )


def _parse_base(raw: Any, where: Where) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    base = _mapping(raw, where("base"), "{preset: cifar100_cut_mixmo}")
    _check_fields(base, ("preset", "overrides"), where, "base")
    preset = base.get("preset")
    if preset is not None:
        _choice(preset, list_presets(), where("base", "preset"), "preset")
    overrides = _mapping(base.get("overrides", {}), where("base", "overrides"), "{optim.lr: 0.1}")
    for key in overrides:
        _config_key(key, where("base", "overrides", key))
    try:
        config = resolve_config(preset=preset, overrides=overrides)
    except ConfigError as err:
        raise SpaceError(
            f"{where('base')}: the base config is invalid: {err}; fix "
            "`base.overrides` or choose another preset"
        ) from None
    return preset, dict(overrides), config.flat()


def _parse_params(raw: Any, base_values: dict[str, Any], where: Where) -> tuple[Param, ...]:
    specs = _mapping(raw, where("params"), "{optim.lr: {type: loguniform, low: 0.05, high: 0.2}}")
    if not specs:
        raise SpaceError(
            f"{where('params')}: nothing to search; add a param such as "
            "`optim.lr: {type: loguniform, low: 0.05, high: 0.2}`"
        )
    params = {key: _parse_param(key, spec, where) for key, spec in specs.items()}
    for param in params.values():
        _check_condition(param, params, base_values, where)
    return _dependency_order(params, where)


def _parse_param(key: Any, raw: Any, where: Where) -> Param:
    _config_key(key, where("params", key))
    spec = _mapping(raw, where("params", key), "{type: uniform, low: 0.0, high: 1.0}")
    kind = _choice(spec.get("type"), list(PARAM_FIELDS), where("params", key, "type"), "type")
    required, optional = PARAM_FIELDS[kind]
    _check_fields(spec, ("type", *required, *optional), where, "params", key)
    for name in required:
        if name not in spec:
            raise SpaceError(f"{where('params', key)}: a {kind} param needs `{name}`; add it")
    when = _parse_when(spec.get("when", {}), key, where)
    if kind == "fixed":
        return Param(key, kind, value=spec["value"], when=when)
    if kind == "categorical":
        return Param(key, kind, choices=_parse_choices(spec["choices"], key, where), when=when)
    holds = get_type_hints(SECTIONS[key.split(".")[0]])[key.split(".")[1]]
    if holds not in ((float,) if kind != "int" else (int, float)):
        raise SpaceError(
            f"{where('params', key, 'type')}: `{key}` holds {holds.__name__} "
            f"values, which {kind} cannot draw; use categorical"
        )
    number = int if kind == "int" else float
    low = _typed(spec["low"], number, where("params", key, "low"))
    high = _typed(spec["high"], number, where("params", key, "high"))
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise SpaceError(
            f"{where('params', key)}: needs finite low < high; got low={low}, "
            f"high={high}; swap them, or use `type: fixed` for one value"
        )
    if kind == "loguniform" and low <= 0:
        raise SpaceError(
            f"{where('params', key, 'low')}: loguniform needs low > 0; got {low}; "
            "raise it or use `type: uniform`"
        )
    if kind != "int":
        return Param(key, kind, low, high, when=when)
    step = _typed(spec.get("step", 1), int, where("params", key, "step"), low=1)
    log = _typed(spec.get("log", False), bool, where("params", key, "log"))
    if (high - low) % step:
        raise SpaceError(
            f"{where('params', key, 'step')}: step {step} must divide "
            f"high - low = {high - low}; change `step` or `high`"
        )
    if log and (low < 1 or step != 1):
        raise SpaceError(
            f"{where('params', key, 'log')}: a log int needs low >= 1 and step 1; "
            f"got low={low}, step={step}"
        )
    return Param(key, kind, low, high, step=step, log=log, when=when)


def _parse_choices(choices: Any, key: str, where: Where) -> tuple[Any, ...]:
    at = where("params", key, "choices")
    if not isinstance(choices, list) or len(choices) < 2:
        raise SpaceError(
            f"{at}: needs a list of two or more values; got {choices!r}; for one "
            "value write `{type: fixed, value: ...}`"
        )
    for choice in choices:
        if not isinstance(choice, str | int | float | bool):
            raise SpaceError(
                f"{at}: choices are numbers, strings or booleans (what Optuna "
                f"stores); got {choice!r}"
            )
    if len(set(choices)) < len(choices):
        raise SpaceError(f"{at}: lists a value twice in {choices}; remove the repeat")
    return tuple(choices)


def _parse_when(raw: Any, key: str, where: Where) -> dict[str, tuple[Any, ...]]:
    when = _mapping(raw, where("params", key, "when"), "{mixing.block: [cut, cow]}")
    for cond_key, allowed in when.items():
        at = where("params", key, "when", cond_key)
        _config_key(cond_key, at)
        if cond_key == key:
            raise SpaceError(f"{at}: a param cannot depend on itself; remove `{cond_key}`")
        if not isinstance(allowed, list) or not allowed:
            raise SpaceError(f"{at}: needs a list of values, e.g. [{allowed}]; got {allowed!r}")
    return {k: tuple(v) for k, v in when.items()}


def _check_condition(
    param: Param, params: dict[str, Param], base_values: dict[str, Any], where: Where
) -> None:
    for cond_key, allowed in param.when.items():
        at = where("params", param.key, "when", cond_key)
        parent = params.get(cond_key)
        if parent is None and base_values[cond_key] not in allowed:
            raise SpaceError(
                f"{at}: never holds: `{cond_key}` is not searched and the base "
                f"config sets it to {base_values[cond_key]!r}, not one of "
                f"{list(allowed)}; search it or drop the condition"
            )
        if parent is not None and parent.type not in CONDITION_TYPES:
            raise SpaceError(
                f"{at}: a condition tests exact values, so `{cond_key}` must be "
                f"{' or '.join(CONDITION_TYPES)}, not {parent.type}; make it "
                "categorical or condition on another key"
            )
        for value in allowed if parent is not None else ():
            if not parent.admits(value):
                raise SpaceError(
                    f"{at}: `{cond_key}` never takes {value!r}; its values are "
                    f"{parent.grid_values()}; fix the list"
                )


def _dependency_order(params: dict[str, Param], where: Where) -> tuple[Param, ...]:
    """Each condition's searched key before the params it gates, file order otherwise."""
    ordered: list[Param] = []
    pending = dict(params)
    while pending:
        ready = next((p for p in pending.values() if not set(p.when) & set(pending)), None)
        if ready is None:  # every pending param waits on another: follow them to the loop
            path = [next(iter(pending))]
            while path.count(path[-1]) < 2:
                path.append(next(k for k in pending[path[-1]].when if k in pending))
            loop = path[path.index(path[-1]) :]
            raise SpaceError(
                f"{where('params', loop[0], 'when')}: conditions form a loop "
                f"({' -> '.join(loop)}); remove one of these `when`s"
            )
        ordered.append(pending.pop(ready.key))
    return tuple(ordered)


def _check_extremes(
    params: Sequence[Param], preset: str | None, overrides: dict[str, Any], where: Where
) -> None:
    """Resolve the config at each param's bounds, so config rules fail now, not mid-search."""
    fixed = {p.key: p.value for p in params if p.type == "fixed" and not p.when}
    searched = {p.key for p in params}
    fixes = {"categorical": "remove it from `choices`", "fixed": "change `value`"}
    for param in params:
        # a conditional param is only set where its condition holds, so check it there
        context = {k: v[0] for k, v in param.when.items() if k in searched}
        for value in param.extremes():
            flat = {**overrides, **fixed, **context, param.key: value}
            try:
                resolve_config(preset=preset, overrides=flat)
            except ConfigError as err:
                fix = fixes.get(param.type, "narrow `low`/`high`")
                raise SpaceError(
                    f"{where('params', param.key)}: value {value!r} makes an "
                    f"invalid training config: {err}; {fix}"
                ) from None


def _parse_objectives(raw: Any, where: Where) -> tuple[Objective, ...]:
    if isinstance(raw, dict):  # a single objective may skip the list
        return (_parse_metric(raw, where, "objective"),)
    if not isinstance(raw, list) or not raw:
        raise SpaceError(
            f"{where('objective')}: must be a list such as "
            f"[{{metric: val/acc, mode: max}}]; got {raw!r}"
        )
    objectives = tuple(_parse_metric(item, where, "objective", i) for i, item in enumerate(raw))
    metrics = [o.metric for o in objectives]
    if len(set(metrics)) < len(metrics):
        raise SpaceError(f"{where('objective')}: lists a metric twice in {metrics}; remove one")
    return objectives


def _parse_metric(raw: Any, where: Where, *keys: Any) -> Objective:
    item = _mapping(raw, where(*keys), "{metric: val/acc, mode: max}")
    _check_fields(item, ("metric", "mode"), where, *keys)
    metric, mode, at = item.get("metric"), item.get("mode"), where(*keys, "metric")
    if isinstance(metric, str) and metric.startswith("test/"):
        raise SpaceError(
            f"{at}: cannot select on {metric}: the test split only reports, and "
            "choosing on it would overfit the test set (spec §Metrics); use "
            f"val/{metric.removeprefix('test/')}"
        )
    if not isinstance(metric, str) or not METRIC_PATTERN.fullmatch(metric):
        raise SpaceError(
            f"{at}: metric names look like val/NAME or train/NAME (e.g. val/acc, "
            f"val/nll); got {metric!r}"
        )
    if mode not in ("min", "max"):
        raise SpaceError(f"{where(*keys, 'mode')}: must be min or max; got {mode!r}")
    return Objective(metric, mode)


def _parse_sampler(raw: Any, where: Where) -> SamplerSpec:
    options = dict(_mapping(raw, where("sampler"), "{type: tpe, seed: 0}"))
    kind = options.pop("type", "tpe")
    seed = options.pop("seed", 0)
    seed = None if seed is None else _typed(seed, int, where("sampler", "seed"), low=0)
    return SamplerSpec(kind, seed, options)


def _parse_scheduler(
    raw: Any, base_values: dict[str, Any], params: Sequence[Param], where: Where
) -> SchedulerSpec:
    options = dict(_mapping(raw, where("scheduler"), "{type: asha, grace_period: 1}"))
    at = where("scheduler", "type")
    kind = _choice(options.pop("type", "fifo"), list(SCHEDULER_OPTIONS), at, "scheduler")
    allowed = SCHEDULER_OPTIONS[kind]
    _check_fields(options, [*allowed, "type"], where, "scheduler")
    options = {k: _typed(v, allowed[k], where("scheduler", k), low=1) for k, v in options.items()}
    epochs = [max(p.extremes()) for p in params if p.key == "optim.epochs"]
    options.setdefault("max_t", int(epochs[0]) if epochs else base_values["optim.epochs"])
    scheduler = SchedulerSpec(kind, **options)
    if kind == "asha" and scheduler.grace_period > scheduler.max_t:
        raise SpaceError(
            f"{where('scheduler', 'grace_period')}: must be <= max_t "
            f"({scheduler.max_t} epochs); got {scheduler.grace_period}"
        )
    if kind == "asha" and scheduler.reduction_factor == 1:
        raise SpaceError(
            f"{where('scheduler', 'reduction_factor')}: must be > 1 (a rung keeps "
            "1/reduction_factor of its trials); got 1"
        )
    return scheduler


def _parse_guard(
    raw: Any, objectives: tuple[Objective, ...], scheduler: SchedulerSpec, where: Where
) -> Objective | None:
    if raw is not None:
        return _parse_metric(raw, where, "guard")
    if len(objectives) == 1:
        return objectives[0]
    if scheduler.type == "asha":
        raise SpaceError(
            f"{where('scheduler', 'type')}: asha stops trials on one metric, and "
            f"this search has {len(objectives)} objectives; add `guard: {{metric: "
            "val/acc, mode: max}` or use `scheduler: {type: fifo}`"
        )
    return None


def _parse_budget(raw: Any, sampler: SamplerSpec, params: Sequence[Param], where: Where) -> Budget:
    spec = _mapping(raw, where("budget"), "{trials: 20, time: 2h}")
    _check_fields(spec, ("trials", "time"), where, "budget")
    trials = spec.get("trials")
    trials = None if trials is None else _typed(trials, int, where("budget", "trials"), low=1)
    time_s = None if spec.get("time") is None else _seconds(spec["time"], where("budget", "time"))
    if sampler.type == "grid":
        size = math.prod(len(p.grid_values()) for p in params if p.type != "fixed")
        if (trials or 0) > size:
            raise SpaceError(
                f"{where('budget', 'trials')}: the grid has {size} points, so "
                f"{trials} trials would repeat some; set trials <= {size}"
            )
        trials = trials or size
    if trials is None and time_s is None:
        raise SpaceError(
            f"{where('budget')}: a search needs an end; set `trials` (e.g. 20) "
            "and/or `time` (e.g. 2h)"
        )
    population = sampler.options.get("population_size", 50)  # Optuna's nsga2 default
    if sampler.type == "nsga2" and trials is not None and trials < 2 * population:
        _warn(
            f"{where('budget', 'trials')}: {trials} trials is under two nsga2 generations of "
            f"{population}; lower `sampler.population_size` or raise trials"
        )
    return Budget(trials, time_s)


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(value))
    if match and float(match[1]) > 0:
        return float(match[1]) * TIME_UNITS[match[2]]
    raise SpaceError(
        f"{where}: must be a positive duration: seconds, or a number with s, m, h "
        f"or d (e.g. 90m, 2h); got {value!r}"
    )


def _parse_resources(raw: Any, base_values: dict[str, Any], where: Where) -> Resources:
    spec = _mapping(raw, where("resources"), "{gpus: 1, cpus: 4}")
    _check_fields(spec, ("gpus", "cpus"), where, "resources")
    gpus = _typed(spec.get("gpus", 0), float, where("resources", "gpus"), low=0)
    cpus = _typed(spec.get("cpus", 1), float, where("resources", "cpus"), low=1)
    if gpus > 1 and not gpus.is_integer():
        raise SpaceError(
            f"{where('resources', 'gpus')}: above 1 must be whole (only a share "
            f"of one GPU can be fractional); got {gpus}"
        )
    if gpus == 0 and base_values["run.device"] == "cuda":
        raise SpaceError(
            f"{where('resources', 'gpus')}: the base config has run.device=cuda "
            "but trials get no GPU; set `gpus: 1` or `run.device: auto`"
        )
    return Resources(gpus, cpus)
