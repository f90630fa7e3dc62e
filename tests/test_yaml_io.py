"""yaml_io: every YAML input is data or one line naming the source, the line and the fix.

The rules are checked on generated documents (alias bombs of every width and depth, nesting
of every depth, an alias placed anywhere relative to its anchor, arbitrary text) against
what PyYAML's own safe loader makes of the same text where it is accepted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixmo_search import yaml_io
from mixmo_search.errors import ConfigError, UserError
from mixmo_search.yaml_io import MAX_BYTES, MAX_DEPTH, MAX_VALUES, YamlError, load_text, read_file

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def laughs(width: int, levels: int) -> str:
    """`l0` a list of `width` strings, each next level a list of `width` aliases of the last."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def expanded_values(width: int, levels: int) -> int:
    """Values of `laughs(width, levels)` written out: the mapping, each key, each list."""
    size, total = 1 + width, 1 + (1 + (1 + width))
    for _ in range(levels):
        size = 1 + width * size
        total += 1 + size
    return total


def one_line_error(caught: pytest.ExceptionInfo, source: str) -> str:
    message = str(caught.value)
    assert "\n" not in message and message.startswith(source), message
    return message


# --- the named cases ---


def test_a_recursive_alias_is_refused_at_its_line(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("optim:\n  lr: 0.1\n  milestones: &m [1, *m]\n")
    with pytest.raises(YamlError) as caught:
        read_file(path)
    message = one_line_error(caught, f"{path}:3:")
    assert "*m" in message and "contain itself" in message


def test_a_recursive_merge_key_is_refused():
    with pytest.raises(YamlError, match="contain itself"):
        load_text("base: &b {<<: *b, x: 1}\n", source="s")


def test_three_thousand_nested_brackets_are_refused_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("params: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(YamlError) as caught:
        read_file(path)
    assert f"more than {MAX_DEPTH}" in one_line_error(caught, f"{path}:1:")


def test_a_billion_laughs_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(laughs(10, 9))  # 10**10 values written out
    start = time.monotonic()
    with pytest.raises(YamlError) as caught:
        read_file(path)
    assert time.monotonic() - start < 2
    message = one_line_error(caught, f"{path}:")
    assert "aliases expand it to" in message and f"{MAX_VALUES:,}" in message


@pytest.mark.parametrize("size", [MAX_BYTES + 1, 4 * MAX_BYTES])
def test_a_file_over_the_size_bound_is_refused(tmp_path, size):
    path = tmp_path / "big.yaml"
    path.write_text("#" * (size - 1) + "\n")
    with pytest.raises(YamlError) as caught:
        read_file(path)
    assert "larger than" in one_line_error(caught, f"{path}:")


def test_an_endless_file_is_read_only_to_the_bound():
    with pytest.raises(YamlError, match="larger than"):
        read_file("/dev/zero")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 2024-13-01\n", "month must be in 1..12"),  # a timestamp PyYAML cannot build
        ("a: " + "1" * 5000 + "\n", "4300 digits"),  # Python's int-from-text limit
        ("? [1]\n: 2\n", "a list or mapping used as a key"),
        ("a: !!python/object:os.system x\n", "could not determine a constructor"),
        ("a: [1\nb: 2\n", "not valid YAML"),
        ("a: 1\n---\nb: 2\n", "a single document"),
        ("a: *nowhere\n", "undefined alias"),
        ("a: \x1f\n", "character #x001f"),
    ],
)
def test_values_python_cannot_build_are_one_line_errors(tmp_path, text, expected):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(YamlError) as caught:
        read_file(path)
    assert expected in one_line_error(caught, f"{path}:")


def test_the_callers_error_class_and_a_flag_without_line_numbers():
    with pytest.raises(ConfigError) as caught:
        load_text("[", source="override 'optim.lr=['", error=ConfigError)
    assert one_line_error(caught, "override 'optim.lr=[': not valid YAML")


def test_unreadable_files_say_what_to_pass(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)))
    with pytest.raises(YamlError, match="cannot be read as a YAML text file.*pass a config"):
        read_file(tmp_path / "bin.yaml", expected="a config")
    with pytest.raises(YamlError, match="cannot be read"):
        read_file(tmp_path / "missing.yaml")


def test_shared_aliases_within_the_bound_load_as_pyyaml_loads_them(tmp_path):
    text = "x: &x [1, 2]\ny: [*x, *x]\nbase: &b {p: 0.5}\nmore: {<<: *b, q: 1}\n"
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    assert read_file(path) == yaml.safe_load(text)
    assert read_file(tmp_path / "ok.yaml") == load_text(text, source="s")
    (tmp_path / "empty.yaml").write_text("")
    assert read_file(tmp_path / "empty.yaml") is None


def test_the_node_tree_keeps_positions():
    path = Path(__file__).parents[1] / "search_spaces" / "quickstart.yaml"
    node = yaml_io.compose_file(path)
    keys = {key.value: key.start_mark.line + 1 for key, _ in node.value}
    assert keys["params"] == path.read_text().splitlines().index("params:") + 1
    assert yaml_io.construct(node, source=path) == yaml.safe_load(path.read_text())


# --- the rules, on generated documents ---


@SETTINGS
@given(width=st.integers(1, 12), levels=st.integers(0, 8))
def test_aliases_are_refused_exactly_when_they_expand_past_the_bound(width, levels):
    text = laughs(width, levels)
    total = expanded_values(width, levels)
    if total > MAX_VALUES:
        with pytest.raises(YamlError, match=f"expand it to {total:,} values"):
            load_text(text, source="s")
    else:
        assert load_text(text, source="s") == yaml.safe_load(text)


def nested(depth: int, n_block: int, kinds: list[str]) -> str:
    """`depth` lists and mappings: the outer `n_block` in block style (`-`, `m:`), the rest in
    flow style (`[...]`, `{k: ...}`), which cannot hold block ones."""
    text, block = "1", False
    for level in reversed(range(depth)):
        sequence = kinds[level % len(kinds)] == "list"
        if level >= n_block:
            text = f"[{text}]" if sequence else f"{{k: {text}}}"
            continue
        head = "  " * level + ("-" if sequence else "m:")
        text, block = (f"{head}\n{text}" if block else f"{head} {text}"), True
    return text + "\n"


@SETTINGS
@given(
    depth=st.integers(1, 3 * MAX_DEPTH),
    block_share=st.floats(0, 1),
    kinds=st.lists(st.sampled_from(["list", "map"]), min_size=1, max_size=5),
)
def test_nesting_is_refused_exactly_past_the_bound(depth, block_share, kinds):
    text = nested(depth, round(depth * block_share), kinds)
    if depth > MAX_DEPTH:
        with pytest.raises(YamlError, match=f"more than {MAX_DEPTH}"):
            load_text(text, source="s")
    else:
        assert load_text(text, source="s") == yaml.safe_load(text)


TREES = st.recursive(
    st.integers(0, 9),
    lambda inner: (
        st.lists(inner, min_size=1, max_size=3)
        | st.dictionaries(st.sampled_from("abcd"), inner, min_size=1, max_size=3)
    ),
    max_leaves=12,
)


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every node's path, in document order."""
    if isinstance(tree, dict):
        children = list(tree.items())
    else:
        children = list(enumerate(tree)) if isinstance(tree, list) else []
    return [prefix] + [p for key, child in children for p in _paths(child, (*prefix, key))]


def _emit(tree: Any, anchor: tuple, alias: tuple, at: tuple = ()) -> str:
    """Flow YAML of `tree` with `&A` on the node at `anchor` and `*A` in place of `alias`."""
    if at == alias:
        return "*A"
    mark = "&A " if at == anchor else ""
    if isinstance(tree, dict):
        inner = ", ".join(f"{k}: {_emit(v, anchor, alias, (*at, k))}" for k, v in tree.items())
        return f"{mark}{{{inner}}}"
    if isinstance(tree, list):
        inner = ", ".join(_emit(v, anchor, alias, (*at, i)) for i, v in enumerate(tree))
        return f"{mark}[{inner}]"
    return f"{mark}{tree}"


@SETTINGS
@given(tree=TREES, data=st.data())
def test_an_alias_is_refused_inside_its_anchor_and_before_it(tree, data):
    paths = _paths(tree)
    anchor = data.draw(st.sampled_from(paths))
    alias = data.draw(st.sampled_from([p for p in paths if p]) if len(paths) > 1 else st.just(()))
    text = _emit(tree, anchor, alias)
    order = {path: i for i, path in enumerate(paths)}
    inside = alias[: len(anchor)] == anchor
    if inside and alias != anchor:
        with pytest.raises(YamlError, match=r"\*A sits inside the value anchored &A"):
            load_text(text, source="s")
    elif order[alias] <= order[anchor]:  # the alias comes first (or replaces its anchor)
        with pytest.raises(YamlError, match="undefined alias"):
            load_text(text, source="s")
    else:
        assert load_text(text, source="s") == yaml.safe_load(text)


YAML_ALPHABET = st.sampled_from(list("[]{}:,-?&*!|>'\"#%@` \n\t.0123456789aeEnNx<=~") + ["\\"])


@pytest.mark.slow
@SETTINGS
@given(text=st.text(YAML_ALPHABET, max_size=60) | st.text(max_size=30))
def test_any_text_is_data_or_one_line_user_error(text):
    try:
        loaded = load_text(text, source="--set x")
    except UserError as err:
        assert "\n" not in str(err) and str(err).startswith("--set x")
        return
    assert repr(loaded) == repr(yaml.safe_load(text))  # repr: .nan equals itself there
