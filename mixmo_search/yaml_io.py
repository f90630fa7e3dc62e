"""YAML from users, read with limits: search spaces, config files, presets and `--set` values.

PyYAML's safe loader runs no code, but a few bytes can still crash or exhaust the machine:
an alias inside its own anchor makes a value that contains itself, nested aliases expand
exponentially ("billion laughs": the loader shares them, every later walk pays for each
copy), thousands of nested brackets exhaust Python's recursion, and a huge file or
`/dev/zero` is read whole. Here the node tree is composed with a bound on depth, an alias is
refused inside its own anchor, the values the aliases expand to are counted, and at most
`MAX_BYTES` are read. Each refusal, like a syntax error, is one line naming the source, the
line, what is wrong and the fix, raised as the caller's `UserError` subclass.

`compose_file` and `construct` are the two halves of `read_file`, for callers that need the
node tree's positions (search/fields.py keeps every key's line).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mixmo_search.errors import UserError

MAX_BYTES = 1 << 20  # 1 MiB; a shipped space or preset is a few KiB
MAX_DEPTH = 64  # nested mappings and lists; the shipped files nest 4 deep
MAX_VALUES = 100_000  # keys, values and items once every alias is expanded


class YamlError(UserError):
    """A YAML input that is unreadable, invalid, or beyond the limits above."""


def read_file(
    path: str | Path, *, error: type[UserError] = YamlError, expected: str = "a YAML file"
) -> Any:
    """The data of the YAML file `path` (None when empty), read within the limits."""
    node = compose_file(path, error=error, expected=expected)
    return _construct(node, _Source(str(path)), error)


def load_text(text: str, *, source: str, error: type[UserError] = YamlError) -> Any:
    """The data of a YAML string (a flag's value); `source` names it in errors."""
    if len(text) > MAX_BYTES:
        raise error(f"{source}: {len(text):,} characters, more than the {MAX_BYTES:,} allowed")
    where = _Source(source, numbered="\n" in text)
    return _construct(_compose(text, where, error), where, error)


def compose_file(
    path: str | Path, *, error: type[UserError] = YamlError, expected: str = "a YAML file"
) -> yaml.Node | None:
    """The checked node tree of the YAML file `path` (None when empty)."""
    return _compose(_read_text(Path(path), error, expected), _Source(str(path)), error)


def construct(
    node: yaml.Node | None, *, source: str | Path, error: type[UserError] = YamlError
) -> Any:
    """Python data from a node tree `compose_file` checked."""
    return _construct(node, _Source(str(source)), error)


def _construct(node: yaml.Node | None, source: _Source, error: type[UserError]) -> Any:
    if node is None:
        return None
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise error(_invalid(err, source)) from None
    finally:
        loader.dispose()


@dataclass(frozen=True)
class _Source:
    """How errors name an input: a file as `path:line`, a one-line flag value by its name."""

    name: str
    numbered: bool = True

    def at(self, mark: yaml.Mark | None) -> str:
        return f"{self.name}:{mark.line + 1}" if mark and self.numbered else self.name


class _Refused(yaml.MarkedYAMLError):
    """A limit this module enforces, raised while composing, with its position."""

    def __init__(self, mark: yaml.Mark | None, message: str) -> None:
        super().__init__(problem=message, problem_mark=mark)
        self.message = message


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with bounded nesting and no alias inside its own anchor."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None and target.end_mark is None:  # its anchor is still open
                raise _Refused(
                    event.start_mark,
                    f"the alias *{event.anchor} sits inside the value anchored "
                    f"&{event.anchor} (line {target.start_mark.line + 1}), which would "
                    "contain itself; write the value out, or alias it from outside its anchor",
                )
            return super().compose_node(parent, index)
        if not isinstance(event, yaml.CollectionStartEvent):
            return super().compose_node(parent, index)
        if self.depth >= MAX_DEPTH:
            raise _Refused(
                event.start_mark,
                f"nested more than {MAX_DEPTH} lists or mappings deep; flatten it (a config "
                "or search space nests a few levels)",
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as err:  # e.g. 2024-13-01, a 5000-digit integer
            value = f"{node.value[:40]!r}: " if isinstance(node, yaml.ScalarNode) else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"{value}{err}", node.start_mark
            ) from None


def _read_text(path: Path, error: type[UserError], expected: str) -> str:
    """At most MAX_BYTES of `path` as text; a bounded read also stops at `/dev/zero`."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise error(
                f"{path}: larger than the {MAX_BYTES:,} bytes a YAML input may hold; "
                f"is it the right file? pass {expected}"
            )
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise error(
            f"{path}: cannot be read as a YAML text file ({err}); pass {expected}"
        ) from None


def _compose(text: str, source: _Source, error: type[UserError]) -> yaml.Node | None:
    try:
        loader = _Loader(text)  # its reader refuses control characters already here
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise error(_invalid(err, source)) from None
    if node is not None:
        _check_tree(node, source, error)
    return node


def _check_tree(root: yaml.Node, source: _Source, error: type[UserError]) -> None:
    """Refuse a list or mapping as a key, and a tree that holds more than MAX_VALUES values
    once its aliases are expanded (the error points at a smallest part over the limit)."""
    sizes: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
    worst: list[yaml.Node] = []

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            if isinstance(node, yaml.MappingNode):
                _check_keys(node, source, error)
                children = [child for pair in node.value for child in pair]
            else:
                children = node.value if isinstance(node, yaml.SequenceNode) else []
            total = 1 + sum(map(size, children))
            if total > MAX_VALUES and not worst:
                worst.append(node)  # children finish first: none of this one's is over
            sizes[id(node)] = total
        return sizes[id(node)]

    total = size(root)  # depth is bounded by MAX_DEPTH: recursion is safe
    if total <= MAX_VALUES:
        return
    aliased = len(sizes) <= MAX_VALUES  # without aliases the tree itself is that large
    why = "its aliases expand it to" if aliased else "it holds"
    fix = "write the values out or alias fewer times" if aliased else "split it"
    raise error(
        f"{source.at(worst[0].start_mark)}: {why} {total:,} values, more than the "
        f"{MAX_VALUES:,} a YAML input may hold; {fix}"
    )


def _check_keys(node: yaml.MappingNode, source: _Source, error: type[UserError]) -> None:
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise error(
                f"{source.at(key.start_mark)}: a list or mapping used as a key; keys are "
                "names: write `name: value`"
            )


def _invalid(err: yaml.YAMLError, source: _Source) -> str:
    if isinstance(err, _Refused):
        return f"{source.at(err.problem_mark)}: {err.message}"
    if isinstance(err, yaml.reader.ReaderError):  # no mark: it names the character
        return (
            f"{source.name}: not valid YAML (character #x{err.character:04x} at position "
            f"{err.position} is not allowed); remove it"
        )
    mark, opened = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or err
    # PyYAML marks the token after the mistake; an unclosed bracket shows where it opened
    context = f" {err.context}" if getattr(err, "context", None) else ""
    if opened and source.numbered:
        context += f" at line {opened.line + 1}"
    fix = "fix the syntax"
    if isinstance(err, yaml.constructor.ConstructorError):  # well-formed, but not a value
        fix = "fix the value, or quote it to keep it a string"
    return f"{source.at(mark)}: not valid YAML ({problem}{context}); {fix}"
