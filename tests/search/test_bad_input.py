"""Generated bad input for `python -m mixmo_search.tune`: every case plans or exits 2 with one
line, never a traceback, and writes nothing.

Hypothesis mutates a valid search-space file (any key, any value: numbers, NaN, infinities,
strings, lists, mappings, nulls, unknown keys, raw bytes) and draws command-line flags
(numbers as text, names, paths, store URIs, cluster addresses). Each case runs the real CLI
entry point in this process with `--dry-run`, which checks everything a search checks before
it starts Ray or writes anything, and never opens a network connection; so no case can
reach another host, and the folder it runs in must stay empty.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixmo_search import tune

SPACE_CASES, FLAG_CASES, TEXT_CASES = 300, 200, 60
VALID: dict[str, Any] = {
    "name": "fuzz",
    "base": {"preset": "digits_quick", "overrides": {"optim.epochs": 3}},
    "params": {
        "model.n_members": {"type": "int", "low": 1, "high": 3},
        "mixing.block": {
            "type": "categorical",
            "choices": ["sum", "linear", "cut"],
            "when": {"model.n_members": [2, 3]},
        },
        "optim.lr": {"type": "loguniform", "low": 0.4, "high": 1.2},
        "mixing.p": {"type": "uniform", "low": 0.1, "high": 0.9},
    },
    "objective": [{"metric": "val/acc", "mode": "max"}],
    "sampler": {"type": "tpe", "seed": 0},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "budget": {"trials": 4, "time": "30m"},
    "resources": {"gpus": 0, "cpus": 1},
}
# every path to a value in VALID, so a mutation can land anywhere in the file
PATHS = [
    path
    for path in (
        ("name",), ("base", "preset"), ("base", "overrides"),
        ("base", "overrides", "optim.epochs"),
        ("params",), ("params", "model.n_members", "low"), ("params", "model.n_members", "high"),
        ("params", "model.n_members", "type"), ("params", "mixing.block", "choices"),
        ("params", "mixing.block", "when"), ("params", "optim.lr", "low"),
        ("params", "optim.lr", "high"), ("params", "mixing.p"), ("params", "mixing.p", "type"),
        ("objective",), ("objective", 0, "metric"), ("objective", 0, "mode"), ("sampler",),
        ("sampler", "type"), ("sampler", "seed"), ("scheduler", "type"),
        ("scheduler", "grace_period"), ("scheduler", "reduction_factor"), ("budget",),
        ("budget", "trials"), ("budget", "time"), ("resources", "gpus"), ("resources", "cpus"),
    )
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["val/acc", "test/acc", "val/bogus", "cut", "tpe", "asha", "1e5", "inf",
                     "mixing.p", "30m", "-1", "grid", "nsga2", "cmaes", "categorical"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=8,
)


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


@st.composite
def spaces(draw: st.DrawFn) -> dict[str, Any]:
    """VALID with 1-3 values replaced, keys added or keys removed."""
    doc = yaml.safe_load(yaml.safe_dump(VALID))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "add", "remove"]))
        path = draw(st.sampled_from(PATHS))
        with contextlib.suppress(KeyError, IndexError, TypeError):
            if action == "replace":
                _set(doc, path, draw(values))
            elif action == "add":
                _set(doc, (*path[:-1], draw(st.text(min_size=1, max_size=12))), draw(values))
            else:
                parent = doc
                for key in path[:-1]:
                    parent = parent[key]
                del parent[path[-1]]
    return doc


numbers_as_text = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "0", "-1", "0.5", "1e9", "two", "", "8"]),
    st.floats(allow_nan=True).map(str),
    st.integers(-5, 10**6).map(str),
)
flags = st.fixed_dictionaries(
    {},
    optional={
        "--gpus": numbers_as_text,
        "--cpus": numbers_as_text,
        "--trials": numbers_as_text,
        "--name": st.one_of(st.text(max_size=15), st.sampled_from(["../x", "a/b", ".h", "ok"])),
        "--storage": st.sampled_from(
            ["runs", "/proc/nope", "{tmp}/file.txt/x", "s3://b/k", "{tmp}/deep/er"]
        ),  # fmt: skip
        "--mlflow-uri": st.one_of(
            st.sampled_from(
                [
                    "foo://bar",
                    "sqlite:///{tmp}/file.txt",
                    "sqlite:////proc/x.db",
                    "./mlruns",
                    "http://127.0.0.1:9",
                    "postgresql://u@h/db",
                    "sqlite:///{tmp}/m.db",
                    "sqlite:///{tmp}",
                ]
            ),  # fmt: skip
            st.text(max_size=20),
        ),
        "--address": st.one_of(
            st.sampled_from(["auto", "127.0.0.1:1", "ray://127.0.0.1:1", "h:0", "x:99999"]),
            st.text(max_size=20),
        ),
        "--warm-start": st.sampled_from(["nope", "fuzz", ""]),
    },
)


def _run(argv: list[str], folder: Path) -> tuple[int, str]:
    """Run the CLI in `folder`; (exit code, stderr)."""
    err = io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                tune.main(argv)
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.chdir(cwd)
    return code, err.getvalue()


def _check(argv: list[str], folder: Path, before: set[str]) -> None:
    code, err = _run([*argv, "--dry-run"], folder)
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    if code == 2:
        assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], (argv, err)
    others = [line for line in err.splitlines() if not line.startswith(("error: ", "warning: "))]
    assert not others, (argv, err)
    assert {p.name for p in folder.iterdir()} == before, (argv, "wrote files")


CASE_SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.mark.slow
@settings(max_examples=SPACE_CASES, **CASE_SETTINGS)
@given(doc=spaces())
def test_generated_space_files_plan_or_fail_in_one_line(doc):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        text = yaml.safe_dump(doc, allow_unicode=True)
        (folder / "space.yaml").write_text(text)
        _check(["--space", str(folder / "space.yaml")], folder, {"space.yaml"})


@settings(max_examples=TEXT_CASES, **CASE_SETTINGS)
@given(blob=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_arbitrary_bytes_as_a_space_file_fail_in_one_line(blob):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "space.yaml").write_bytes(blob)
        _check(["--space", str(folder / "space.yaml")], folder, {"space.yaml"})


@pytest.mark.slow
@settings(max_examples=FLAG_CASES, **CASE_SETTINGS)
@given(chosen=flags)
def test_generated_flags_plan_or_fail_in_one_line(chosen):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "space.yaml").write_text(yaml.safe_dump(VALID))
        (folder / "file.txt").write_text("not a folder, not a database\n")
        argv = ["--space", str(folder / "space.yaml")]
        for flag, value in chosen.items():
            argv += [flag, value.replace("{tmp}", tmp)]
        _check(argv, folder, {"space.yaml", "file.txt"})
