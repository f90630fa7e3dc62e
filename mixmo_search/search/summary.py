"""The end-of-search report on the terminal: counts, best trial, Pareto set, where to look.

Every command it prints runs as shown: it names the interpreter that ran the search (the
virtual environment's, when `python` on PATH is another one) and every flag that is not a
default, so a pasted `--resume` finds the same storage, store and resources. A tracking
server serves its own MLflow UI: then the address is printed instead of `mlflow ui`.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixmo_search.errors import EXIT_FAILED, one_line
from mixmo_search.pareto import pareto_front
from mixmo_search.search.outcomes import Outcome

if TYPE_CHECKING:
    import pandas as pd

    from mixmo_search.search.plan import SearchPlan

DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard.py"


STATUSES = (*(o.value for o in Outcome), "running")  # a trial's `mixmo.status` tags
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C


def summarize(trials: pd.DataFrame, plan: SearchPlan) -> dict[str, Any]:
    """Counts, the best finished trial, the Pareto set (on final validation metrics) and, per
    searched categorical or int param, the mean objective of finished trials by value."""
    counts = {"total": len(trials)}
    for status in STATUSES:
        counts[status] = int((trials["status"] == status).sum()) if len(trials) else 0
    space = plan.space
    metrics = [f"final/{o.metric}" for o in space.objectives]
    modes = [o.mode for o in space.objectives]
    finished = trials[trials["status"] == "finished"] if len(trials) else trials
    rows = finished.to_dict("records") if len(finished) else []
    front = pareto_front(rows, metrics, modes) if rows else []
    searched = [p.key for p in space.params]

    def describe(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "trial_id": row["trial_id"],
            "run_id": row["run_id"],
            "objectives": {m: row.get(m) for m in metrics},
            "test": {k: row[k] for k in ("final/test/acc", "final/test/nll") if k in row},
            "params": {k: row.get(f"param.{k}") for k in searched},
        }

    sign = 1 if modes[0] == "max" else -1
    scored = [r for r in rows if r.get(metrics[0]) == r.get(metrics[0])]  # drop NaN
    best = describe(max(scored, key=lambda r: sign * r[metrics[0]])) if scored else None
    return {
        "search": plan.name,
        "counts": counts,
        "objectives": dict(zip(metrics, modes, strict=True)),
        "best": best,
        "pareto": [describe(rows[i]) for i in front],
        "by_param": _by_param(finished, space, metrics[0], modes[0]),
        "finished_run_ids": [r["run_id"] for r in rows],
        "failures": _failures(trials),
    }


def _failures(trials: pd.DataFrame) -> dict[str, list[str]]:
    """{reason: the trials that failed for it}, for the failed trials."""
    failed = trials[trials["status"] == Outcome.FAILED] if len(trials) else trials
    found: dict[str, list[str]] = {}
    for row in failed.to_dict("records"):
        found.setdefault(row.get("error") or "no reason recorded", []).append(row["trial_id"])
    return found


def _by_param(
    finished: pd.DataFrame, space: Any, metric: str, mode: str
) -> dict[str, dict[str, float]]:
    """{param: {value: mean `metric`}} over the finished trials that drew the param (a
    conditional one is not drawn everywhere), best value first, for searched params with a
    few values (categorical, int) seen with at least two values."""
    import ast

    found: dict[str, dict[str, float]] = {}
    if finished.empty:
        return found
    drawn = [set(ast.literal_eval(v)) for v in finished.get("param.searched", [])]
    for param in space.params:
        column = f"param.{param.key}"
        if param.type not in ("categorical", "int") or column not in finished:
            continue
        rows = finished.loc[[param.key in keys for keys in drawn]]
        means = rows.groupby(column)[metric].mean().dropna()
        if len(means) >= 2:
            ordered = means.sort_values(ascending=mode == "min")
            found[param.key] = {_short(value): float(mean) for value, mean in ordered.items()}
    return found


def format_summary(summary: dict[str, Any], plan: SearchPlan) -> str:
    counts = summary["counts"]
    lines = [
        "",
        f"search {summary['search']!r}: {counts['total']} trials: {counts['finished']} "
        f"finished, {counts['pruned']} pruned (stopped early), {counts['failed']} failed"
        + (f", {counts['interrupted']} interrupted" if counts["interrupted"] else "")
        + (f", {counts['out_of_time']} stopped by the time budget"
           if counts["out_of_time"] else ""),
    ]  # fmt: skip
    best = summary["best"]
    if best is None:
        lines.append("no trial finished, so there is no best trial yet")
    else:
        lines.append("best trial (validation selects; test only reports):")
        lines.append("  " + _row(best))
    if len(summary["objectives"]) > 1:
        lines.append(f"Pareto set ({len(summary['pareto'])} trials):")
        lines += ["  " + _row(row) for row in summary["pareto"]]
    metric = next(iter(summary["objectives"])).removeprefix("final/")
    for key, means in summary.get("by_param", {}).items():
        shown = ", ".join(f"{value} {mean:.4f}" for value, mean in means.items())
        lines.append(f"found: {key} {next(iter(means))} does best (mean {metric}: {shown})")
    steps = next_steps(plan)
    if summary.get("interrupted"):
        lines.insert(2, "the search was interrupted before its budget; resume it as below")
        steps.append(("resume:", resume_command(plan)))
    lines += ["next:", *(f"  {label:<11} {command}" for label, command in steps)]
    return "\n".join(lines)


def next_steps(plan: SearchPlan) -> list[tuple[str, str]]:
    """(label, command) of what to run next, each as it should be pasted."""
    python, uri = interpreter(), shlex.quote(plan.mlflow_uri)
    study = shlex.quote(plan.study_url)  # libpq finds a server's password in PGPASSFILE
    return [
        ("dashboard:", f"MLFLOW_TRACKING_URI={uri} {python} -m streamlit run "
                       f"{_here(DASHBOARD)} --server.address 127.0.0.1"),
        ("MLflow UI:", plan.mlflow_uri if _is_server(plan.mlflow_uri) else
                       f"{python} -m mlflow ui --backend-store-uri {uri} --host 127.0.0.1"),
        ("Optuna:", f"{script('optuna-dashboard')} {study} --host 127.0.0.1"),
        ("promote:", f"{python} -m mixmo_search.promote --search {plan.name} --mlflow-uri {uri}"),
    ]  # fmt: skip


def _is_server(uri: str) -> bool:
    """A tracking server serves its own UI (`mlflow ui` cannot open it as a store)."""
    return uri.startswith(("http://", "https://"))


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
    return script("python")


def script(name: str) -> str:
    """How to call the command `name` installed beside this interpreter: its bare name when
    PATH finds that one, else its path (e.g. `.venv/bin/optuna-dashboard`)."""
    beside = Path(sys.executable).parent / name
    on_path = shutil.which(name)
    if on_path and Path(on_path) == beside:
        return name
    return _here(beside)


def _row(entry: dict[str, Any]) -> str:
    objectives = ", ".join(f"{k.removeprefix('final/')} {v:.4f}" for k, v in
                           entry["objectives"].items() if v is not None)  # fmt: skip
    test = ", ".join(f"{k.removeprefix('final/')} {v:.4f}" for k, v in entry["test"].items())
    params = ", ".join(f"{k}={_short(v)}" for k, v in entry["params"].items())
    return f"{entry['trial_id']}: {objectives} | {test} | {params}"


def _short(value: Any) -> str:
    """A param value as a user wrote it: 4 not 4.0 (pandas makes int columns with gaps float)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def print_summary(summary: dict[str, Any], plan: SearchPlan) -> None:
    print(format_summary(summary, plan), flush=True)


def exit_code(summary: dict[str, Any]) -> int:
    """The search's exit code: 130 interrupted, 1 when every trial failed (each reason is
    printed on stderr, one line each), else 0."""
    if summary.get("interrupted"):
        return EXIT_INTERRUPTED
    counts = summary["counts"]
    if counts["total"] and counts["failed"] == counts["total"]:
        print(f"error: all {counts['total']} trials of search {summary['search']!r} failed:",
              file=sys.stderr)  # fmt: skip
        for reason, trials in summary["failures"].items():
            print(f"  {one_line(reason)} (trial {', '.join(trials)})", file=sys.stderr)
        return EXIT_FAILED
    return 0
