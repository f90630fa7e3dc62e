"""Every value a space's sampler can draw, checked before a search starts.

A space is checked at the values its trials can get, not only at its bounds. Each param is
tried at every value it can draw (evenly spread probes when it has more than `PROBES`), every
pair of params at up to `PAIR_PROBES` values each — or every combination, when there are at
most `PRODUCT_LIMIT` — with conditional params drawn where their `when` holds, exactly as the
sampler draws them (`types.drawn`). Each choice becomes the trial's config through the builder
the trials use, so a config rule (a batch_repeat that does not divide the batch, Nesterov
without momentum) fails here, naming the param and the value. Then every network and data
shape among those configs is built for real on the meta device (`preflight`), so "the kernel
is larger than the input" or "val_size is not below the training set" fail here too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixmo_search.config import ConfigBuilder, TrainConfig
from mixmo_search.datasets import DatasetShape, describe_dataset
from mixmo_search.errors import ConfigError, DataError
from mixmo_search.preflight import Footprint, check_config
from mixmo_search.search.fields import Where
from mixmo_search.search.types import Param, SpaceError, drawn

PROBES = 256  # values per param tried on its own
PAIR_PROBES = 12  # values per param in each pair
PRODUCT_LIMIT = 4096  # combinations tried all together when there are no more than this
FIXES = {"categorical": "remove it from `choices`", "fixed": "change `value`",
         "int": "narrow `low`/`high` or change `step`"}  # fmt: skip


@dataclass(frozen=True)
class Choice:
    """One trial's draw to check: the sampled values, and the params it is meant to try."""

    values: dict[str, Any]
    tried: tuple[str, ...]


@dataclass(frozen=True)
class SpaceCheck:
    """What the checks built: trial configs, distinct shapes, the largest training."""

    n_configs: int
    n_shapes: int
    largest: Footprint | None  # the footprint of the most memory-hungry trial
    largest_slots: int  # its optim.batch_size
    data_absent: tuple[str, ...] = ()  # data sets not on this machine (why), unchecked here


def check_space(
    params: Sequence[Param], builder: ConfigBuilder, base_values: Mapping[str, Any], where: Where
) -> SpaceCheck:
    """Build and check every choice (see the module docstring); a SpaceError names the
    param(s) and value(s) of the first that fails, or the base config when every trial would
    fail the same way."""
    checked = _Checked(builder)
    base_problem = checked.problem({})
    seen: set[tuple[Any, ...]] = set()
    for choice in _choices(params, base_values):
        drawn_values = tuple(sorted(choice.values.items()))
        if drawn_values in seen:
            continue
        seen.add(drawn_values)
        problem = checked.problem(choice.values)
        if problem is not None and problem == base_problem:
            raise SpaceError(
                f"{where('base')}: the base config cannot train: {problem}; fix "
                "`base.overrides` or choose another preset"
            )
        if problem is not None:
            raise SpaceError(_blame(choice, params, where, problem))
    return SpaceCheck(len(seen), len(checked.footprints), *checked.largest(),
                      tuple(checked.absent))  # fmt: skip


class _Checked:
    """Each choice's config built and checked; data and network checks once per shape."""

    def __init__(self, builder: ConfigBuilder) -> None:
        self.builder = builder
        self.footprints: dict[tuple[Any, ...], tuple[Footprint, int] | str] = {}
        self.absent: dict[str, None] = {}  # why a data set could not be read here, in order

    def problem(self, values: Mapping[str, Any]) -> str | None:
        try:
            cfg = self.builder.build(values)
        except ConfigError as err:
            return str(err)
        key = _shape_key(cfg)
        if key not in self.footprints:
            try:
                shape = _dataset_shape(cfg, self.absent)
                footprint = check_config(cfg, shape) if shape is not None else None
                self.footprints[key] = (footprint, cfg.optim.batch_size)
            except ConfigError as err:
                self.footprints[key] = str(err)
        found = self.footprints[key]
        return found if isinstance(found, str) else None

    def largest(self) -> tuple[Footprint | None, int]:
        fits = [f for f in self.footprints.values() if not isinstance(f, str) and f[0]]
        if not fits:
            return None, 0
        return max(fits, key=lambda fit: fit[0].training_bytes(fit[1]))


# the shapes of the named data sets, for checking a search whose data lives elsewhere (a
# cluster's shared folder): (n_train, n_test, classes, channels, side)
KNOWN_SHAPES = {"cifar10": (50_000, 10_000, 10, 3, 32), "cifar100": (50_000, 10_000, 100, 3, 32),
                "tinyimagenet": (100_000, 10_000, 200, 3, 64)}  # fmt: skip


def _dataset_shape(cfg: TrainConfig, absent: dict[str, None]) -> DatasetShape | None:
    """The data set's shape; for one whose folder is not on this machine, its known shape
    (None for an image folder) and the reason in `absent`."""
    data, hold_out = cfg.data, cfg.run.protocol == "holdout"
    try:
        return describe_dataset(data, hold_out=hold_out)
    except DataError as err:
        if data.name not in KNOWN_SHAPES and data.name != "imagefolder":  # bundled: digits
            raise ConfigError(str(err)) from None
        if Path(data.root).expanduser().exists():
            raise ConfigError(str(err)) from None
        absent[str(err)] = None
    if data.name not in KNOWN_SHAPES:
        return None
    n_train, n_test, classes, channels, side = KNOWN_SHAPES[data.name]
    side = data.image_size or side
    n_val = data.val_size if hold_out else 0
    return DatasetShape(data.name, n_train, n_val, n_test, classes, channels, side, side)


def _shape_key(cfg: TrainConfig) -> tuple[Any, ...]:
    """What the data and network checks depend on: two configs with one key check once."""
    return (cfg.data, cfg.model, cfg.optim.batch_size, cfg.unique_per_step, cfg.run.protocol)


def _choices(params: Sequence[Param], base_values: Mapping[str, Any]) -> Iterator[Choice]:
    """The fixed values together, each param alone on the base config, a reference draw,
    each param on it, then each pair (or every combination when there are few)."""
    by_key = {p.key: p for p in params}
    fixed = {p.key: p.value for p in params if p.type == "fixed" and not p.when}
    if len(fixed) > 1:
        yield Choice(fixed, tuple(fixed))
    for param in params:  # alone: only its conditions' keys beside it
        for value in param.probes(PROBES):
            context: dict[str, Any] = {}
            _activate(param, by_key, context)
            yield Choice({**context, param.key: value}, (param.key,))
    reference = {p.key: _reference_value(p, base_values[p.key]) for p in params}
    yield from _drawn_choices(params, base_values, reference, ())
    for param in params:
        for value in param.probes(PROBES):
            yield from _drawn_choices(params, base_values, reference, ((param, value),))
    searched = [p for p in params if p.type != "fixed"]
    if math.prod(len(p.probes(PROBES)) for p in searched) <= PRODUCT_LIMIT:
        groups = [searched]
        limit = PROBES
    else:
        groups = [list(pair) for pair in itertools.combinations(searched, 2)]
        limit = PAIR_PROBES
    for group in groups:
        for values in itertools.product(*(p.probes(limit) for p in group)):
            tried = tuple(zip(group, values, strict=True))
            yield from _drawn_choices(params, base_values, reference, tried, by_key=by_key)


def _drawn_choices(
    params: Sequence[Param],
    base_values: Mapping[str, Any],
    reference: dict[str, Any],
    tried: tuple[tuple[Param, Any], ...],
    *,
    by_key: Mapping[str, Param] | None = None,
) -> Iterator[Choice]:
    """The draw with `tried` values on top of `reference`, its conditions made to hold where
    the space lets them; nothing when one of the tried params would not be drawn."""
    by_key = by_key or {p.key: p for p in params}
    choice = dict(reference)
    for param, _ in tried:
        _activate(param, by_key, choice)
    choice.update({param.key: value for param, value in tried})
    values = drawn(params, lambda p: choice[p.key], base_values)
    if all(param.key in values for param, _ in tried):
        yield Choice(values, tuple(param.key for param, _ in tried))


def _activate(param: Param, by_key: Mapping[str, Param], choice: dict[str, Any]) -> None:
    """Set the searched keys of `param`'s conditions to values that let it be drawn."""
    for key, allowed in param.when.items():
        parent = by_key.get(key)
        if parent is None:
            continue
        value = next((v for v in allowed if parent.admits(v)), None)
        if value is not None and value != choice.get(key):
            choice[key] = value
            _activate(parent, by_key, choice)


def _reference_value(param: Param, base: Any) -> Any:
    """The base config's value where the param can draw it, else its first probe."""
    if param.type in ("uniform", "loguniform"):
        inside = isinstance(base, int | float) and param.low <= base <= param.high
        return base if inside else param.low
    return base if param.admits(base) else param.probes(1)[0]


def _blame(choice: Choice, params: Sequence[Param], where: Where, err: str) -> str:
    types = {p.key: p.type for p in params}
    if not choice.tried:
        return (
            f"{where('params')}: a trial drawing {_values(choice.values)} has an invalid "
            f"training config: {err}; change the base config or the params"
        )
    first, *others = choice.tried
    also = "".join(f" with `{k}` = {choice.values[k]!r}" for k in others)
    fix = FIXES.get(types[first], "narrow `low`/`high`")
    if others:
        fix += f", or change `{'`, `'.join(others)}`"
    draws = "sets" if types[first] == "fixed" else "can draw"
    return (
        f"{where('params', first)}: {draws} {choice.values[first]!r}{also}, which makes an "
        f"invalid training config: {err}; {fix}"
    )


def _values(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items()) or "nothing"
