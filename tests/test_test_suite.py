"""No test that cannot fail: every test function checks something.

The rule, read from each test module's syntax tree (`ast`): a test function (`test*`, at
module level or in a `Test*` class) passes when its body, nested functions included, holds
at least one of
- an `assert` statement, or `raise AssertionError(...)`;
- a call to `pytest.raises`, `pytest.warns`, `pytest.fail` or `pytest.deprecated_call`;
- a call to a function whose name says it checks: it starts with `assert`, `check`,
  `expect`, `verify` or `wait_until` (a leading `_` allowed), e.g.
  `torch.testing.assert_close`, `np.testing.assert_array_equal`, `waiting.wait_until`;
- a call to a function of the same module that passes this rule itself (a helper that
  asserts), however deep.
A test that only runs code and relies on "no exception" fails the rule: say what it must
not do, and assert it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CHECKING_NAME = re.compile(r"_?(assert|check|expect|verify|wait_until)")
PYTEST_CHECKS = {"raises", "warns", "fail", "deprecated_call"}
# Tests of another engineer's work in progress (issue 21), without an assertion of their
# own; to be fixed there, then removed from here. Each entry is "path::name".
ALLOWED_WITHOUT_ASSERTION: set[str] = set()


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _checks_directly(function: ast.AST) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Raise) and node.exc is not None:
            raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(raised, ast.Name) and raised.id == "AssertionError":
                return True
        if isinstance(node, ast.Call):
            name = _called_name(node)
            is_pytest = isinstance(node.func, ast.Attribute) and (
                isinstance(node.func.value, ast.Name) and node.func.value.id == "pytest"
            )
            if (is_pytest and name in PYTEST_CHECKS) or CHECKING_NAME.match(name):
                return True
    return False


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Every function of the module, nested and methods included, by name."""
    return {
        node.name: node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _checking(functions: dict[str, ast.AST]) -> set[str]:
    """Names of the module's functions that check, directly or through a module helper."""
    checking = {name for name, node in functions.items() if _checks_directly(node)}
    changed = True
    while changed:  # a helper that calls a checking helper checks too
        changed = False
        for name, node in functions.items():
            if name in checking:
                continue
            calls = {_called_name(c) for c in ast.walk(node) if isinstance(c, ast.Call)}
            if calls & checking:
                checking.add(name)
                changed = True
    return checking


def _test_functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    found = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            found += [n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                      and n.name.startswith("test")]  # fmt: skip
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name.startswith("test"):
                found.append(node)
    return found


def unchecked_tests(source: str, path: str = "<source>") -> list[str]:
    """`path::name` of each test function in `source` that checks nothing."""
    tree = ast.parse(source)
    checking = _checking(_functions(tree))
    return [f"{path}::{test.name}" for test in _test_functions(tree) if test.name not in checking]


def test_every_test_function_checks_something():
    missing = []
    for path in sorted(TESTS.rglob("test_*.py")):
        relative = path.relative_to(TESTS.parent).as_posix()
        missing += unchecked_tests(path.read_text(), relative)
    unexpected = sorted(set(missing) - ALLOWED_WITHOUT_ASSERTION)
    assert not unexpected, "tests that cannot fail (no assertion; see this module's rule):\n" + (
        "\n".join(unexpected)
    )
    fixed = sorted(ALLOWED_WITHOUT_ASSERTION - set(missing))
    assert not fixed, f"these now check something: remove them from the allow-list: {fixed}"


EXAMPLES = """
import pytest, torch

def _helper(x):
    assert x

def _calls_helper(x):
    _helper(x)

def test_runs_only():
    torch.zeros(3).sum()

def test_asserts():
    assert 1

def test_raises():
    with pytest.raises(ValueError):
        int("x")

def test_close():
    torch.testing.assert_close(torch.zeros(1), torch.zeros(1))

def test_through_helpers():
    _calls_helper(1)

def test_raise_assertion():
    raise AssertionError("always")

def test_nested_only_defines():
    def inner():
        return 1
    inner()

class TestGroup:
    def test_method_without(self):
        pass

    def test_method_with(self):
        assert self
"""


def test_the_rule_tells_checking_tests_from_the_others():
    assert unchecked_tests(EXAMPLES, "x.py") == [
        "x.py::test_runs_only",
        "x.py::test_nested_only_defines",
        "x.py::test_method_without",
    ]
