"""The rules of a search-space file: one parser per top-level key (format: `space.py`).

Each parser turns its block into the classes of `types.py` or raises a `SpaceError` that names
the file, line and key, what is allowed and the fix; `space.load_space` calls them in turn.
The sampler's own rules live with the samplers (`samplers.check_sampler`). Kept whole (a
little over 400 lines): a space file's rules read in one place, in the file's own order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mixmo_search.config import MAX_MEMBERS, MAX_SEED, ConfigBuilder, TrainConfig, list_presets
from mixmo_search.errors import ConfigError
from mixmo_search.metrics import ROBUSTNESS_METRICS, SPLIT_METRICS, TRAIN_METRICS
from mixmo_search.search.fields import (
    Where,
    check_fields,
    config_key,
    did_you_mean,
    mapping,
    one_of,
    read_yaml,
    seconds,
    typed,
    warn,
)
from mixmo_search.search.placement import MAX_TRIALS_PER_GPU, check_share
from mixmo_search.search.types import (
    Budget,
    Objective,
    Param,
    Resources,
    SamplerSpec,
    SchedulerSpec,
    SpaceError,
)

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
SCHEDULER_OPTIONS: dict[str, dict[str, type]] = {
    "fifo": {},
    "asha": {"grace_period": int, "reduction_factor": float, "max_t": int},
}
CONDITION_TYPES = ("categorical", "int", "fixed")
KEY_TYPES = {key: type(value) for key, value in TrainConfig().flat().items()}
UNSEARCHABLE = {  # keys a search sets itself, or that would make trials incomparable
    "run.protocol": "a search selects on the validation split the holdout protocol keeps",
    "run.out_dir": "each trial writes in its own folder, which the search chooses",
    "run.device": "the search puts trials on the devices --gpus gives them",
}
METRIC_PATTERN = re.compile(r"(train|val|cost)/[A-Za-z0-9_.]+")
KNOWN_METRICS = (
    *(f"val/{m}" for m in SPLIT_METRICS),
    *(f"val/{m}" for m in ROBUSTNESS_METRICS),  # with data.corruptions / data.ood
    *(f"val/acc_member{k}" for k in range(MAX_MEMBERS)),
    *(f"train/{m}" for m in TRAIN_METRICS),
    "cost/params",
    "cost/flops",  # inference cost, fixed by the config (train.py)
)


def parse_document(path: Path) -> tuple[dict[Any, Any], Where]:
    """The file's top-level mapping, its keys checked, and the locator of its keys."""
    raw, where = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: must be a mapping with {', '.join(REQUIRED_KEYS)}; got {raw!r}")
    check_fields(raw, TOP_KEYS, where)
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise SpaceError(f"{path}: missing top-level key `{key}`; see search_spaces/README.md")
    return raw, where


NAME_RULE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")  # a folder, a run, a study
NAME_HELP = "1 to 100 letters, digits, `_`, `.`, `-`, not starting with `.`"


def parse_name(name: Any, where: Where) -> str:
    """The search's name (default: the file's stem), checked for use in names and paths."""
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        raise SpaceError(
            f"{where('name')}: use {NAME_HELP} (it names the search's folder, its MLflow "
            f"runs and its Optuna study); got {name!r}"
        )
    return name


def parse_base(raw: Any, where: Where) -> tuple[str | None, dict[str, Any], ConfigBuilder]:
    base = mapping(raw, where("base"), "{preset: cifar100_cut_mixmo}")
    check_fields(base, ("preset", "overrides"), where, "base")
    preset = base.get("preset")
    if preset is not None:
        one_of(preset, list_presets(), where("base", "preset"), "preset")
    overrides = mapping(base.get("overrides", {}), where("base", "overrides"), "{optim.lr: 0.1}")
    for key in overrides:
        config_key(key, where("base", "overrides", key))
    builder = ConfigBuilder.of(preset=preset)
    try:
        config = builder.build(overrides)
    except ConfigError as err:
        raise SpaceError(
            f"{where('base')}: the base config is invalid: {err}; fix "
            "`base.overrides` or choose another preset"
        ) from None
    if config.run.protocol != "holdout":
        raise SpaceError(
            f"{where('base', 'overrides', 'run.protocol')}: a search selects on a validation "
            f"split, which run.protocol={config.run.protocol} does not hold out; remove it "
            "(train the paper protocol with python -m mixmo_search.train)"
        )
    return preset, dict(overrides), ConfigBuilder.of(config.to_dict())


def parse_params(raw: Any, base_values: dict[str, Any], where: Where) -> tuple[Param, ...]:
    specs = mapping(raw, where("params"), "{optim.lr: {type: loguniform, low: 0.05, high: 0.2}}")
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
    config_key(key, where("params", key))
    if key in UNSEARCHABLE:
        raise SpaceError(f"{where('params', key)}: {UNSEARCHABLE[key]}; remove it")
    spec = mapping(raw, where("params", key), "{type: uniform, low: 0.0, high: 1.0}")
    kind = one_of(spec.get("type"), list(PARAM_FIELDS), where("params", key, "type"), "type")
    required, optional = PARAM_FIELDS[kind]
    check_fields(spec, ("type", *required, *optional), where, "params", key)
    for name in required:
        if name not in spec:
            raise SpaceError(f"{where('params', key)}: a {kind} param needs `{name}`; add it")
    when = _parse_when(spec.get("when", {}), key, where)
    if kind == "fixed":
        return Param(key, kind, value=spec["value"], when=when)
    if kind == "categorical":
        return Param(key, kind, choices=_parse_choices(spec["choices"], key, where), when=when)
    holds = KEY_TYPES[key]
    if holds not in ((float,) if kind != "int" else (int, float)):
        raise SpaceError(
            f"{where('params', key, 'type')}: `{key}` holds {holds.__name__} "
            f"values, which {kind} cannot draw; use categorical"
        )
    number = int if kind == "int" else float
    low = typed(spec["low"], number, where("params", key, "low"))
    high = typed(spec["high"], number, where("params", key, "high"))
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
    step = typed(spec.get("step", 1), int, where("params", key, "step"), low=1)
    log = typed(spec.get("log", False), bool, where("params", key, "log"))
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
    when = mapping(raw, where("params", key, "when"), "{mixing.block: [cut, cow]}")
    for cond_key, allowed in when.items():
        at = where("params", key, "when", cond_key)
        config_key(cond_key, at)
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


def parse_objectives(raw: Any, where: Where) -> tuple[Objective, ...]:
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
    item = mapping(raw, where(*keys), "{metric: val/acc, mode: max}")
    check_fields(item, ("metric", "mode"), where, *keys)
    metric, mode, at = item.get("metric"), item.get("mode"), where(*keys, "metric")
    if isinstance(metric, str) and metric.startswith("test/"):
        raise SpaceError(
            f"{at}: cannot select on {metric}: the test split only reports, and "
            "choosing on it would overfit the test set (docs/method.md §Protocols); use "
            f"val/{metric.removeprefix('test/')}"
        )
    if not isinstance(metric, str) or not METRIC_PATTERN.fullmatch(metric):
        raise SpaceError(
            f"{at}: metric names look like val/NAME, train/NAME or cost/NAME (e.g. val/acc, "
            f"val/nll); got {metric!r}"
        )
    if metric not in KNOWN_METRICS:
        raise SpaceError(
            f"{at}: the trainer never reports {metric!r}; {did_you_mean(metric, KNOWN_METRICS)}"
            f"choose one of: {', '.join(m for m in KNOWN_METRICS if 'member' not in m)}, "
            "val/acc_member<k>"
        )
    if mode not in ("min", "max"):
        raise SpaceError(f"{where(*keys, 'mode')}: must be min or max; got {mode!r}")
    return Objective(metric, mode)


def check_metric_sources(
    metrics: Sequence[Objective | None], base: TrainConfig, where: Where
) -> None:
    """Objectives and the guard on corrupted or OOD images need the base to name such images
    and to score them every epoch: Tune expects the metric in every report
    (docs/method.md §Uncertainty)."""
    needs = {"val/corrupt_": "data.corruptions", "val/ood_": "data.ood"}
    for metric in {m.metric for m in metrics if m is not None}:
        key = next((k for prefix, k in needs.items() if metric.startswith(prefix)), None)
        if key is None:
            continue
        if not getattr(base.data, key.split(".")[1]):
            raise SpaceError(
                f"{where('objective')}: {metric} needs images to score: set {key} in "
                f"`base.overrides` (e.g. data.corruptions: all, data.ood: sklearn-photos)"
            )
        if base.run.robustness_every != 1:
            raise SpaceError(
                f"{where('objective')}: {metric} must be reported every epoch for Tune; set "
                "run.robustness_every: 1 in `base.overrides` (data.corruption_size bounds "
                "its cost)"
            )


def parse_sampler(raw: Any, where: Where) -> SamplerSpec:
    options = dict(mapping(raw, where("sampler"), "{type: tpe, seed: 0}"))
    kind = options.pop("type", "tpe")
    seed = options.pop("seed", 0)
    if seed is not None:
        seed = typed(seed, int, where("sampler", "seed"), low=0)
        if seed > MAX_SEED:
            raise SpaceError(
                f"{where('sampler', 'seed')}: must be in [0, {MAX_SEED}] (numpy's seed range, "
                f"which Optuna's samplers use); got {seed}"
            )
    return SamplerSpec(kind, seed, options)


def parse_scheduler(
    raw: Any, base_values: dict[str, Any], params: Sequence[Param], where: Where
) -> SchedulerSpec:
    options = dict(mapping(raw, where("scheduler"), "{type: asha, grace_period: 1}"))
    at = where("scheduler", "type")
    kind = one_of(options.pop("type", "fifo"), list(SCHEDULER_OPTIONS), at, "scheduler")
    allowed = SCHEDULER_OPTIONS[kind]
    check_fields(options, [*allowed, "type"], where, "scheduler")
    options = {k: typed(v, allowed[k], where("scheduler", k), low=1) for k, v in options.items()}
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


def parse_guard(
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


def parse_budget(raw: Any, sampler: SamplerSpec, params: Sequence[Param], where: Where) -> Budget:
    spec = mapping(raw, where("budget"), "{trials: 20, time: 2h}")
    check_fields(spec, ("trials", "time"), where, "budget")
    trials = spec.get("trials")
    trials = None if trials is None else typed(trials, int, where("budget", "trials"), low=1)
    time_s = None if spec.get("time") is None else seconds(spec["time"], where("budget", "time"))
    if sampler.type == "grid":
        size = int(math.prod(p.count() for p in params if p.type != "fixed"))
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
        warn(
            f"{where('budget', 'trials')}: {trials} trials is under two nsga2 generations of "
            f"{population}; lower `sampler.population_size` or raise trials"
        )
    return Budget(trials, time_s)


def parse_resources(raw: Any, base_values: dict[str, Any], where: Where) -> Resources:
    spec = mapping(raw, where("resources"), "{gpus: 1, cpus: 4}")
    check_fields(spec, ("gpus", "cpus"), where, "resources")
    gpus = typed(spec.get("gpus", 0), float, where("resources", "gpus"), low=0)
    cpus = typed(spec.get("cpus", 1), float, where("resources", "cpus"), low=1)
    share = check_share(gpus)
    if share is None:
        raise SpaceError(
            f"{where('resources', 'gpus')}: a trial takes whole GPUs or a share 1/k of one "
            f"that k trials fill (0.5, 0.333, 0.25, 0.2, ... down to 1/{MAX_TRIALS_PER_GPU}); "
            f"got {gpus:g}"
        )
    if gpus == 0 and base_values["run.device"] == "cuda":
        raise SpaceError(
            f"{where('resources', 'gpus')}: the base config has run.device=cuda "
            "but trials get no GPU; set `gpus: 1` or `run.device: auto`"
        )
    return Resources(share, cpus)
