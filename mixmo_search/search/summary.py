"""The end-of-search report on the terminal: counts, best trial, Pareto set, findings, where
to look; read from the trial record (`trial_table`) the dashboard and promotion read.

A finding ("found:") states, for each value of a searched param, how many finished trials
back it (mean and standard error), names the values none of whose trials finished ("3: all
pruned at epoch 2") and names a best value only when the evidence holds it (see
`_findings`).

Every command it prints runs as shown: it names the interpreter that ran the search (the
virtual environment's, when `python` on PATH is another one) and every flag that is not a
default, so a pasted `--resume` finds the same storage, store and resources. A tracking
server serves its own MLflow UI: then the address is printed instead of `mlflow ui`. Each
server command names its port: the tool's default when it is free on 127.0.0.1 as the report
is printed, else one the OS says is free (a dashboard left open on 8501 does not make the
printed one fail).
"""

from __future__ import annotations

import math
import shlex
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixmo_search import trial_table
from mixmo_search.errors import EXIT_FAILED, EXIT_INTERRUPTED, one_line
from mixmo_search.search.outcomes import Outcome

if TYPE_CHECKING:
    import pandas as pd

    from mixmo_search.search.plan import SearchPlan

DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard.py"


STATUSES = (*(o.value for o in Outcome), "running")  # a trial's `mixmo.status` tags
FEW_VALUES = 12  # an int param with at most this many values gets a finding per value
TWO_SE = 2.0  # a finding names a best value only when it leads by this many standard errors
DEFAULT_PORTS = {"dashboard:": 8501, "MLflow UI:": 5000, "Optuna:": 8080}  # each tool's own


def summarize(trials: pd.DataFrame, plan: SearchPlan) -> dict[str, Any]:
    """Counts, the best finished trial (ties as Optuna breaks them), the Pareto set and, per
    searched categorical or int param, what its values' trials show; from `trials`, the
    search's `trial_table.load_trials` frame, read as the trial record every view reads."""
    record = trial_table.reported(trials)
    counts = {"total": len(record)}
    for status in STATUSES:
        counts[status] = int((record["status"] == status).sum()) if len(record) else 0
    space = plan.space
    objectives = {o.metric: o.mode for o in space.objectives}
    axes = trial_table.pareto_axes(objectives)
    metric, mode = next(iter(objectives.items()))
    keys = [p.key for p in space.params]

    def describe(row: dict[str, Any]) -> dict[str, Any]:
        number = row.get("optuna_trial")
        return {
            "trial_id": row["trial_id"],
            "run_id": row["run_id"],
            "optuna_trial": int(number) if number == number and number is not None else None,
            "objectives": {f"final/{m}": _number(row.get(m)) for m in objectives},
            "test": {
                f"final/{k}": row[k]
                for k in ("test/acc", "test/nll")
                if row.get(k) == row.get(k) and k in row
            },  # fmt: skip
            "params": trial_table.drawn_params(row, keys),
        }

    best = trial_table.best_trial(record, metric, mode)
    front = set(trial_table.pareto_run_ids(record, axes))
    ordered = trial_table.best_first(record, metric, mode) if len(record) else record
    pareto = [
        {**describe(r), "axes": {f"final/{m}": _number(r.get(m)) for m in axes}}
        for r in ordered.to_dict("records")
        if r["run_id"] in front
    ]
    finished = record[record["status"] == "finished"] if len(record) else record
    return {
        "search": plan.name,
        "counts": counts,
        "objectives": {f"final/{m}": d for m, d in objectives.items()},
        "best": describe(best) if best else None,
        "tied_with": _tied(record, best, metric),
        "pareto_on": axes,
        "pareto": pareto,
        "by_param": _findings(record, space, metric, mode),
        "finished_run_ids": finished["run_id"].tolist(),
        "failures": _failures(record),
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None


def _tied(record: pd.DataFrame, best: dict[str, Any] | None, metric: str) -> list[str]:
    """The other finished trials with the best trial's value of `metric`, best_first's order."""
    if best is None:
        return []
    same = record[(record["status"] == "finished") & (record[metric] == best[metric])]
    ordered = trial_table.best_first(same, metric, "max")
    return ordered.loc[ordered["run_id"] != best["run_id"], "trial_id"].tolist()


def _failures(trials: pd.DataFrame) -> dict[str, list[str]]:
    """{reason: the trials that failed for it}, for the failed trials."""
    failed = trials[trials["status"] == Outcome.FAILED] if len(trials) else trials
    found: dict[str, list[str]] = {}
    for row in failed.to_dict("records"):
        found.setdefault(row.get("error") or "no reason recorded", []).append(row["trial_id"])
    return found


def _findings(
    record: pd.DataFrame, space: Any, metric: str, mode: str
) -> dict[str, dict[str, Any]]:
    """{param: finding} for each searched param with a few values (categorical; int with at
    most FEW_VALUES): per value, over the trials that drew the param (a conditional one is
    not drawn everywhere), how many finished and their mean `metric` with its standard
    error, and how the others ended. A finding names a best value only when it and the
    runner-up each rest on two or more finished trials and it leads by more than TWO_SE
    standard errors of the difference. Left out: params seen with one value, and params
    whose every value rests on at most one finished trial with none all stopped."""
    found: dict[str, dict[str, Any]] = {}
    if record.empty or metric not in record:
        return found
    drawn_by = [set(trial_table.searched_keys(v)) for v in
                record.get(trial_table.SEARCHED, [None] * len(record))]  # fmt: skip
    for param in space.params:
        if param.type not in ("categorical", "int") or param.count() > FEW_VALUES:
            continue
        column = f"param.{param.key}"
        rows = record.loc[[param.key in keys for keys in drawn_by]]
        if column not in rows or rows[column].nunique() < 2:
            continue
        values = {_short(v): _value_finding(rows[rows[column] == v], metric)
                  for v in param.grid_values()}  # fmt: skip
        seen = {v: f for v, f in values.items() if f["trials"]}
        counts = [f["finished"] for f in seen.values()]
        if max(counts) < 2 and min(counts) > 0:
            continue  # one finished trial a value: nothing to tell
        found[param.key] = {
            "drawn": len(rows),
            "values": values,
            "best": _leader(seen, mode),
        }
    return found


def _value_finding(rows: pd.DataFrame, metric: str) -> dict[str, Any]:
    """The trials of one param value: counts, mean `metric` of the finished ones and its
    standard error (None below two), and the epochs the pruned ones stopped at."""
    finished = rows.loc[rows["status"] == "finished", metric].dropna()
    ended = rows.loc[rows["status"] != "finished", "status"].value_counts()
    pruned = rows.loc[rows["status"] == "pruned", "epochs"].dropna()
    n = len(finished)
    return {
        "trials": len(rows),
        "finished": n,
        "mean": float(finished.mean()) if n else None,
        "se": float(finished.std(ddof=1) / math.sqrt(n)) if n >= 2 else None,
        "others": {str(k): int(v) for k, v in ended.items()},
        "pruned_at": sorted({int(e) for e in pruned}),
    }


def _leader(values: dict[str, dict[str, Any]], mode: str) -> str | None:
    """The value whose finished trials do best, when the evidence says so (see _findings)."""
    scored = sorted(
        (v for v in values if values[v]["finished"]),
        key=lambda v: values[v]["mean"], reverse=mode == "max",
    )  # fmt: skip
    if len(scored) < 2:
        return None
    first, second = values[scored[0]], values[scored[1]]
    if first["se"] is None or second["se"] is None:
        return None
    spread = math.hypot(first["se"], second["se"])
    return scored[0] if abs(first["mean"] - second["mean"]) > TWO_SE * spread else None


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
    metric = next(iter(summary["objectives"])).removeprefix("final/")
    if best is None:
        lines.append("no trial finished, so there is no best trial yet")
    else:
        lines.append("best trial (validation selects; test only reports):")
        lines.append("  " + _row(best))
        if summary.get("tied_with"):
            lines.append(
                f"  tied on {metric} with {', '.join(summary['tied_with'])}: the lowest Optuna "
                "trial number is named best, as Optuna's best_trial and optuna-dashboard do"
            )
    axes = " and ".join(f"{m} ({d})" for m, d in summary.get("pareto_on", {}).items())
    lines.append(f"Pareto set on {axes} ({len(summary['pareto'])} finished trials):")
    lines += ["  " + _row(row) for row in summary["pareto"]]
    for key, finding in summary.get("by_param", {}).items():
        lines.append(_finding_line(key, finding, metric, summary["counts"]["total"]))
    steps = next_steps(plan)
    if summary.get("interrupted"):
        lines.insert(2, "the search was interrupted before its budget; resume it as below")
        steps.append(("resume:", resume_command(plan)))
    lines += ["next:", *(f"  {label:<11} {command}" for label, command in steps)]
    return "\n".join(lines)


def _finding_line(key: str, finding: dict[str, Any], metric: str, total: int) -> str:
    """e.g. `found: model.n_members (mean val/acc ± s.e. of finished trials): 1: 0.9600 ±
    0.0000 (3 finished); 2: 0.8800 (1 finished); 3: all pruned at epoch 2 (1 trial); too
    few finished trials to name a best value` (s.e.: the standard error of the mean)."""
    drawn = "" if finding["drawn"] == total else f", drawn in {finding['drawn']} of {total} trials"
    parts = [f"{value}: {_value_text(f)}" for value, f in finding["values"].items()]
    if finding["best"] is not None:
        verdict = f"{finding['best']} does best (by more than {TWO_SE:g} standard errors)"
    elif sum(f["finished"] >= 2 for f in finding["values"].values()) >= 2:
        verdict = f"no value leads by more than {TWO_SE:g} standard errors"
    else:
        verdict = "too few finished trials to name a best value"
    return (f"found: {key} (mean {metric} ± s.e. of finished trials{drawn}): "
            + "; ".join(parts) + f"; {verdict}")  # fmt: skip


def _value_text(found: dict[str, Any]) -> str:
    if not found["trials"]:
        return "never drawn"
    if found["finished"]:
        spread = f" ± {found['se']:.4f}" if found["se"] is not None else ""
        return f"{found['mean']:.4f}{spread} ({found['finished']} finished)"
    others = found["others"]
    at = ", ".join(map(str, found["pruned_at"]))
    if set(others) == {"pruned"}:
        return f"all pruned at epoch {at} ({found['trials']} trial{_s(found['trials'])})"
    shown = ", ".join(f"{n} {status}" + (f" at epoch {at}" if status == "pruned" else "")
                      for status, n in others.items())  # fmt: skip
    return f"none finished ({shown})"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def next_steps(plan: SearchPlan) -> list[tuple[str, str]]:
    """(label, command) of what to run next, each as it should be pasted."""
    python, uri = interpreter(), shlex.quote(plan.mlflow_uri)
    study = shlex.quote(plan.study_url)  # libpq finds a server's password in PGPASSFILE
    port = {label: free_port(default) for label, default in DEFAULT_PORTS.items()}
    return [
        ("dashboard:", f"MLFLOW_TRACKING_URI={uri} {python} -m streamlit run "
                       f"{_here(DASHBOARD)} --server.address 127.0.0.1 "
                       f"--server.port {port['dashboard:']}"),
        ("MLflow UI:", plan.mlflow_uri if _is_server(plan.mlflow_uri) else
                       f"{python} -m mlflow ui --backend-store-uri {uri} --host 127.0.0.1 "
                       f"--port {port['MLflow UI:']}"),
        ("Optuna:", f"{script('optuna-dashboard')} {study} --host 127.0.0.1 "
                    f"--port {port['Optuna:']}"),
        ("promote:", f"{python} -m mixmo_search.promote --search {plan.name} --mlflow-uri {uri}"),
    ]  # fmt: skip


def free_port(preferred: int) -> int:
    """`preferred` when nothing listens on 127.0.0.1:`preferred` now, else a port the OS
    says is free there."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free TCP port on 127.0.0.1")


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
    shown = entry.get("axes") or entry["objectives"]  # a Pareto row: the front's metrics
    objectives = ", ".join(f"{k.removeprefix('final/')} {v:.4f}" for k, v in
                           shown.items() if v is not None)  # fmt: skip
    test = ", ".join(f"{k.removeprefix('final/')} {v:.4f}" for k, v in entry["test"].items())
    params = ", ".join(f"{k}={_short(v)}" for k, v in entry["params"].items())
    number = entry.get("optuna_trial")
    name = entry["trial_id"] + (f" (Optuna #{number})" if number is not None else "")
    return f"{name}: {objectives} | {test} | {params}"


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
