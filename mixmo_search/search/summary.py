"""The end-of-search report on the terminal: counts, best trial, Pareto set, where to look.

Every command it prints runs as shown: it names the interpreter that ran the search (the
virtual environment's, when `python` on PATH is another one) and every flag that is not a
default, so a pasted `--resume` finds the same storage, store and resources.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mixmo_search.search.run import SearchPlan

DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard.py"


def format_summary(summary: dict[str, Any], plan: SearchPlan) -> str:
    counts = summary["counts"]
    lines = [
        "",
        f"search {summary['search']!r}: {counts['total']} trials: {counts['finished']} "
        f"finished, {counts['pruned']} stopped early, {counts['failed']} failed"
        + (f", {counts['interrupted']} interrupted" if counts["interrupted"] else ""),
    ]
    best = summary["best"]
    if best is None:
        lines.append("no trial finished, so there is no best trial yet")
    else:
        lines.append("best trial (validation selects; test only reports):")
        lines.append("  " + _row(best))
    if len(summary["objectives"]) > 1:
        lines.append(f"Pareto set ({len(summary['pareto'])} trials):")
        lines += ["  " + _row(row) for row in summary["pareto"]]
    steps = next_steps(plan)
    if summary.get("interrupted"):
        lines.insert(2, "the search was interrupted before its budget; resume it as below")
        steps.append(("resume:", resume_command(plan)))
    lines += ["next:", *(f"  {label:<11} {command}" for label, command in steps)]
    return "\n".join(lines)


def next_steps(plan: SearchPlan) -> list[tuple[str, str]]:
    """(label, command) of what to run next, each as it should be pasted."""
    python, uri = interpreter(), shlex.quote(plan.mlflow_uri)
    return [
        ("dashboard:", f"MLFLOW_TRACKING_URI={uri} {python} -m streamlit run "
                       f"{_here(DASHBOARD)} --server.address 127.0.0.1"),
        ("MLflow UI:", f"{python} -m mlflow ui --backend-store-uri {uri} --host 127.0.0.1"),
        ("promote:", f"{python} -m mixmo_search.promote --search {plan.name} --mlflow-uri {uri}"),
    ]  # fmt: skip


def resume_command(plan: SearchPlan) -> str:
    """The command that continues this search (or says it has nothing left to run)."""
    parts = [interpreter(), "-m", "mixmo_search.tune", "--space", str(plan.space.path),
             "--name", plan.name, "--resume", "--storage", str(plan.storage),
             "--mlflow-uri", plan.mlflow_uri, "--gpus", f"{plan.gpus_total:g}"]  # fmt: skip
    if plan.cpus_total is not None:
        parts += ["--cpus", f"{plan.cpus_total:g}"]
    if plan.address:
        parts += ["--address", plan.address]
    return " ".join(shlex.quote(p) for p in parts)


def _here(path: Path) -> str:
    """`path` relative to the working directory when inside it, else absolute; quoted."""
    try:
        return shlex.quote(str(path.relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(path))


def interpreter() -> str:
    """`python` when that is this interpreter, else this interpreter's path (relative to the
    working directory when inside it, e.g. `.venv/bin/python`)."""
    on_path = shutil.which("python")
    if on_path and Path(on_path) == Path(sys.executable):
        return "python"
    return _here(Path(sys.executable))


def _row(entry: dict[str, Any]) -> str:
    objectives = ", ".join(f"{k.removeprefix('final/')} {v:.4f}" for k, v in
                           entry["objectives"].items() if v is not None)  # fmt: skip
    test = ", ".join(f"{k.removeprefix('final/')} {v:.4f}" for k, v in entry["test"].items())
    params = ", ".join(f"{k}={_short(v)}" for k, v in entry["params"].items())
    return f"{entry['trial_id']}: {objectives} | {test} | {params}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_summary(summary: dict[str, Any], plan: SearchPlan) -> None:
    print(format_summary(summary, plan), flush=True)
