"""The end-of-search report on the terminal: counts, best trial, Pareto set, where to look."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mixmo_search.search.run import SearchPlan


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
    uri = plan.mlflow_uri
    lines += [
        "next:",
        f"  dashboard:  MLFLOW_TRACKING_URI={uri} streamlit run app/dashboard.py",
        f"  MLflow UI:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1",
        f"  Optuna:     optuna-dashboard sqlite:///{plan.path / 'optuna.db'}",
    ]
    if summary.get("interrupted"):
        lines.insert(2, "the search was interrupted before its budget; resume it as below")
        lines.append(
            f"  resume:     python -m mixmo_search.tune --space {plan.space.path} "
            f"--name {plan.name} --resume"
        )
    return "\n".join(lines)


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
