"""Field checks for search-space YAML: where a key sits in the file, and one value at a time.

`read_yaml` keeps each key's line, so every `SpaceError` starts with the file, line and key
path; the checks below (a mapping, a number of the right type, one of a list, known keys) add
what is allowed and a did-you-mean. What each block of the file may hold is `schema.py`'s.
"""

from __future__ import annotations

import difflib
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mixmo_search import yaml_io
from mixmo_search.config import SECTIONS, TrainConfig
from mixmo_search.search.types import SpaceError, SpaceWarning

TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
EXPECTED = "a search-space .yaml (see search_spaces/)"

Where = Callable[..., str]  # key path -> "file:line: `a.b`", the prefix of every SpaceError


def _locator(path: Path, lines: dict[tuple[Any, ...], int]) -> Where:
    def where(*keys: Any) -> str:
        dotted = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
        for n in range(len(keys), 0, -1):
            if keys[:n] in lines:  # the key itself, else the closest enclosing one
                return f"{path}:{lines[keys[:n]]}: `{dotted}`"
        return f"{path}: `{dotted}`"

    return where


def plain(*keys: Any) -> str:
    return "`" + ".".join(map(str, keys)) + "`"


def read_yaml(path: Path) -> tuple[Any, Where]:
    """The file's data and the locator of its keys; bad YAML or a repeated key is a SpaceError."""
    node = yaml_io.compose_file(path, error=SpaceError, expected=EXPECTED)
    lines = _key_lines(path, node)
    raw = yaml_io.construct(node, source=path, error=SpaceError)
    return raw, _locator(path, lines)


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


def did_you_mean(value: Any, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(value), list(allowed), n=3)
    return f"did you mean {' or '.join(f'`{c}`' for c in close)}? " if close else ""


def one_of(value: Any, allowed: Sequence[str], where: str, what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SpaceError(
            f"{where}: unknown {what} {value!r}; {did_you_mean(value, allowed)}"
            f"choose one of: {', '.join(allowed) or '(none yet)'}"
        )
    return value


def check_fields(
    block: Mapping[Any, Any], allowed: Sequence[str], where: Where, *keys: Any
) -> None:
    for key in block:
        if key not in allowed:
            inside = f"in `{'.'.join(map(str, keys))}`" if keys else "at the top level"
            raise SpaceError(
                f"{where(*keys, key)}: unknown key {key!r}; "
                f"{did_you_mean(key, allowed)}allowed {inside}: "
                f"{', '.join(allowed)}"
            )


def mapping(value: Any, where: str, example: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise SpaceError(f"{where}: must be a mapping such as {example}; got {value!r}")
    return value


def typed(value: Any, typ: type, where: str, *, low: float | None = None) -> Any:
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


def config_key(key: Any, where: str) -> str:
    """`key` if it names a TrainConfig field, else a SpaceError listing its section's keys."""
    keys = list(TrainConfig().flat())
    if key in keys:
        return key
    section, _, name = str(key).rpartition(".")
    siblings = [k.split(".", 1)[1] for k in keys if k.startswith(f"{section}.")]
    if not siblings:
        raise SpaceError(
            f"{where}: {key!r} is not a training-config key; {did_you_mean(key, keys)}"
            f"keys are section.name with sections: {', '.join(SECTIONS)}"
        )
    close = [f"{section}.{c}" for c in difflib.get_close_matches(name, siblings, n=3)]
    raise SpaceError(
        f"{where}: {key!r} is not a training-config key; {did_you_mean(key, close)}"
        f"keys in `{section}`: {', '.join(siblings)}"
    )


def seconds(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(value))
    if match and float(match[1]) > 0:
        return float(match[1]) * TIME_UNITS[match[2]]
    raise SpaceError(
        f"{where}: must be a positive duration: seconds, or a number with s, m, h "
        f"or d (e.g. 90m, 2h); got {value!r}"
    )


def warn(message: str) -> None:
    """A SpaceWarning reported at the line that called the rule that warns."""
    warnings.warn(message, SpaceWarning, stacklevel=3)
