"""The mutation check's machinery (its full run is a benchmark: benchmarks/RESULTS.md).

Its list must fit today's sources, and one mutation run end to end must be applied to a copy
(never the working tree) and be killed by its tests; a change no test can see survives.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tests.waiting import scaled

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "mutation_check.py"
QUICK = "pareto-dominated-by-the-wrong-axis"  # its tests take seconds


def _script():
    spec = importlib.util.spec_from_file_location("mutation_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_mutation_fits_the_sources_and_says_why_when_equivalent():
    check = _script()
    assert check.check_snippets(check.MUTATIONS) == []  # each snippet once; names unique
    assert 40 <= len(check.MUTATIONS) <= 100
    for mutation in check.MUTATIONS:
        assert mutation.tests and all(
            (ROOT / t.split("::")[0]).exists() for t in mutation.tests if not t.startswith("-")
        ), mutation.name
    families = {m.file for m in check.MUTATIONS}
    assert {"mixmo_search/mixing.py", "mixmo_search/step.py", "mixmo_search/data.py",
            "mixmo_search/metrics.py", "mixmo_search/train.py", "mixmo_search/ensembles.py",
            "mixmo_search/pareto.py", "mixmo_search/preflight.py",
            "mixmo_search/config.py"} <= families  # fmt: skip
    assert any(f.startswith("mixmo_search/models/") for f in families)


def test_one_mutation_is_applied_to_a_copy_and_killed(tmp_path):
    target = ROOT / "mixmo_search" / "pareto.py"
    before = _digest(target)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", QUICK, "--json", str(tmp_path / "out.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=scaled(600),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (outcome,) = json.loads((tmp_path / "out.json").read_text())["outcomes"]
    assert outcome["name"] == QUICK and outcome["result"] == "killed", outcome
    assert "FAILED tests/test_pareto.py" in outcome["detail"]
    assert _digest(target) == before  # the working tree is never mutated


def test_a_change_no_test_sees_survives(tmp_path):
    check = _script()
    copy = check.copy_repository(tmp_path)
    unseen = check.Mutation(
        "a-comment", "mixmo_search/pareto.py", 'MODES = ("min", "max")',
        'MODES = ("min", "max")  # a comment', ("tests/test_pareto.py",),
    )  # fmt: skip
    assert check.check_mutation(copy, unseen, scaled(600)).result == "survived"
    declared = check.Mutation(**{**unseen.__dict__, "equivalent": "only a comment"})
    assert check.check_mutation(copy, declared, scaled(600)).result == "equivalent"
    assert (copy / unseen.file).read_text() == (ROOT / unseen.file).read_text()  # restored
