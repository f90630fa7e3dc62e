"""Promote a search's best trial to a registered MLflow model, and move an alias to it.

    python -m mixmo_search.promote --search NAME [--policy best-accuracy] [--alias champion]

A policy picks one *finished* trial on its validation metrics (`final/val/*`; test never
selects). The trial's network is rebuilt from its params and `checkpoint/best.pt` and
re-evaluated on the test split, which checks that the trainer's `final/test/acc` still
reproduces. It is then logged as a pyfunc model (`serving.publish`) in a new child run of the
search (tag `mixmo.kind=promotion`), registered as a new version of `--model-name` (default
`mixmo-<search>`), tagged with its lineage and metrics, and given the alias.

The model lives in its own run, not the trial's: trial runs stay as the trainer closed them,
a trial can be promoted twice (to two names) without reopening it, and the promotion run
holds the re-measured test metrics next to the model. `mixmo.trial_run_id` links the trial.

A current alias holder that is better on the policy's metrics (for `pareto-knee`: one that
dominates the candidate on both) is kept unless `--force`. `plan_promotion` checks a request
against the store and writes nothing: the dashboard shows its plan for confirmation, then
calls `promote`, which also rebuilds and re-tests the network before its first write.

Why one module of ~500 lines: it reads top to bottom as the promotion does (request checks,
candidates, the holder, the refusal rule, rebuild and re-test, the writes, the CLI), and each
part serves only this flow; the shared pieces live elsewhere (`serving`, `inference`).
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mixmo_search import tracking, tracking_auth, trial_table
from mixmo_search.errors import Parser, UserError, exit_on_user_error

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from mixmo_search.config import TrainConfig


class PromoteError(UserError):
    """A promotion request that cannot be carried out as asked."""


@dataclass(frozen=True)
class Policy:
    """How to pick a trial: the validation metrics it ranks on and their directions."""

    name: str
    metrics: tuple[str, ...]
    modes: tuple[str, ...]
    help: str


POLICIES = {
    p.name: p
    for p in (
        Policy("best-accuracy", ("val/acc",), ("max",), "highest validation accuracy"),
        Policy("best-nll", ("val/nll",), ("min",), "lowest validation NLL"),
        Policy(
            "best-diversity", ("val/disagreement",), ("max",),
            "highest validation disagreement among trials with val/acc >= --min-acc",
        ),
        Policy(
            "pareto-knee", ("val/acc", "val/disagreement"), ("max", "max"),
            "knee of the validation accuracy-disagreement Pareto front",
        ),
        # docs/method.md §Uncertainty: trials that logged data.corruptions / data.ood sets
        Policy(
            "best-robust", ("val/corrupt_acc",), ("max",),
            "highest mean accuracy on the generated corruptions of validation "
            "(trained with data.corruptions)",
        ),
        Policy(
            "best-ood", ("val/ood_auroc_msp",), ("max",),
            "highest validation OOD AUROC of the max-softmax score (trained with data.ood)",
        ),
        Policy(
            "best-selective", ("val/aurc",), ("min",),
            "lowest validation area under the risk-coverage curve",
        ),
    )
}  # fmt: skip
ALIAS_RULE = re.compile(r"[A-Za-z0-9_-]{1,255}")  # MLflow's alias characters


@dataclass(frozen=True)
class Trial:
    """A finished trial: its ids and final validation and test metrics (`val/acc`, ...)."""

    trial_id: str
    run_id: str
    val: dict[str, float]
    test: dict[str, float]
    optuna_trial: int | None = None  # its number in the search's study: ties go to the lowest


@dataclass(frozen=True)
class Holder:
    """The model version that holds the alias now, with the metrics tagged on it."""

    version: str
    trial_id: str
    trial_run_id: str
    val: dict[str, float]


@dataclass(frozen=True)
class PromotionPlan:
    """Everything `promote` will do, checked; `refusal` says why it would keep the holder."""

    tracking_uri: str
    experiment_id: str
    search: str
    parent_run_id: str
    policy: Policy
    min_acc: float | None
    chosen_by: str  # "policy", or "trial" when --trial named it
    trial: Trial
    model_name: str
    alias: str
    holder: Holder | None
    refusal: str | None
    registered: str | None = None  # the version of model_name this trial already is, if any


@dataclass(frozen=True)
class Promotion:
    """A registered, aliased model version and how it was chosen and checked."""

    model_name: str
    version: str
    alias: str
    model_uri: str  # models:/NAME@ALIAS
    search: str
    trial_id: str
    trial_run_id: str
    promotion_run_id: str
    policy: str
    val_metrics: dict[str, float]
    test_acc_logged: float  # the trainer's final/test/acc
    test_acc_measured: float  # re-evaluated here from the checkpoint
    replaced_version: str | None
    warnings: tuple[str, ...]
    # a trial promoted before: no new version was made, and what happened to the alias
    again: str | None = None


def plan_promotion(
    search: str,
    *,
    policy: str = "best-accuracy",
    alias: str = "champion",
    model_name: str | None = None,
    trial: str | None = None,
    min_acc: float | None = None,
    tracking_uri: str | None = None,
    experiment: str = tracking.EXPERIMENT,
    record: pd.DataFrame | None = None,
) -> PromotionPlan:
    """Check a promotion request against the store and pick its trial; writes nothing.
    `record`: the search's trial record when the caller holds it (the dashboard's), so it is
    not read again."""
    chosen_policy = _check_request(policy, alias, min_acc)
    model_name = model_name or f"mixmo-{search}"
    _check_model_name(model_name)
    tracking_uri = tracking_uri or tracking.default_tracking_uri()
    client = tracking.connect_existing(tracking_uri)
    exp_id = tracking.experiment_id(client, experiment, create=False)
    parent_id = tracking.search_run_id(client, exp_id, search)
    finished = finished_trials(client, exp_id, parent_id, search, record=record)
    if trial is None:
        chosen = select_trial(finished, chosen_policy, min_acc=min_acc, search=search)
    else:
        chosen = _named_trial(finished, trial, search)
    holder = _holder(client, model_name, alias)
    refusal = None
    if holder is not None and holder.trial_run_id != chosen.run_id:
        refusal = _refusal(chosen_policy, min_acc, chosen, holder, model_name, alias)
    return PromotionPlan(
        tracking_uri, exp_id, search, parent_id, chosen_policy, min_acc,
        "policy" if trial is None else "trial", chosen, model_name, alias, holder, refusal,
        _registered_version(client, model_name, chosen.run_id),
    )  # fmt: skip


def promote(
    search: str,
    *,
    policy: str = "best-accuracy",
    alias: str = "champion",
    model_name: str | None = None,
    trial: str | None = None,
    min_acc: float | None = None,
    force: bool = False,
    tracking_uri: str | None = None,
    experiment: str = tracking.EXPERIMENT,
    device: str = "auto",
    record: pd.DataFrame | None = None,
) -> Promotion:
    """Plan, check on the test split, log, register, tag and alias (the CLI's code path)."""
    plan = plan_promotion(
        search, policy=policy, alias=alias, model_name=model_name, trial=trial,
        min_acc=min_acc, tracking_uri=tracking_uri, experiment=experiment, record=record,
    )  # fmt: skip
    client = tracking.connect(plan.tracking_uri)
    tracking_auth.check_promotion(client, plan.experiment_id, plan.model_name)
    if plan.refusal and not force:
        raise PromoteError(plan.refusal)
    if plan.registered is not None:  # the same network again: move the alias, no new version
        return _realias(plan)
    return _carry_out(plan, device)


def finished_trials(
    client: MlflowClient, exp_id: str, parent_id: str, search: str,
    record: pd.DataFrame | None = None,
) -> list[Trial]:  # fmt: skip
    """The search's finished trials, from the trial record every view reads (`record`, else
    read), in the order that breaks ties (the lowest Optuna trial number first, as Optuna's
    best_trial; then the trial id); or an error saying what there is."""
    rows = trial_table.trial_record(client, exp_id, parent_id) if record is None else record
    records = rows.to_dict("records") if len(rows) else []
    finished = [
        Trial(
            str(r["trial_id"]),
            r["run_id"],
            _metrics(r, "val/"),
            _metrics(r, "test/"),
            int(r["optuna_trial"]) if r.get("optuna_trial") == r.get("optuna_trial") else None,
        )
        for r in records
        if r["status"] == "finished" and _finite(r)
    ]
    if not finished:
        counts = Counter(r["status"] for r in records)
        seen = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"
        raise PromoteError(
            f"search {search!r} has no finished trial ({seen}); only finished trials have a "
            "best checkpoint to promote: wait for the search, or resume it with --resume"
        )
    return sorted(finished, key=_tie_order)


def _tie_order(trial: Trial) -> tuple[bool, int, str]:
    number = trial.optuna_trial
    return number is None, number if number is not None else 0, trial.trial_id


def select_trial(
    trials: list[Trial], policy: Policy, *, min_acc: float | None = None, search: str = ""
) -> Trial:
    """The trial `policy` picks on validation metrics (for pareto-knee, on the Pareto set
    `trial_table.pareto_run_ids` gives the summary and the dashboard); ties go to the lowest
    Optuna trial number, then the smallest trial id."""
    from mixmo_search.pareto import knee_point

    ordered = sorted(trials, key=_tie_order)
    eligible = [t for t in ordered if min_acc is None or t.val.get("val/acc", -1.0) >= min_acc]
    if not eligible:
        best = max(t.val.get("val/acc", 0.0) for t in trials)
        raise PromoteError(
            f"no finished trial of search {search!r} has val/acc >= --min-acc {min_acc} "
            f"(the best has {best:.4f}); lower --min-acc"
        )
    try:
        # one metric: the front is the best value(s), and the knee its first row
        return eligible[knee_point([t.val for t in eligible], policy.metrics, policy.modes)]
    except ValueError:
        raise PromoteError(
            f"no finished trial of search {search!r} has the metrics {list(policy.metrics)} "
            f"that policy {policy.name!r} ranks on; choose another --policy"
        ) from None


def trial_config(params: dict[str, str]) -> TrainConfig:
    """The trial's TrainConfig, rebuilt from its MLflow params (`section.key` strings)."""
    from mixmo_search.config import SECTIONS, resolve_config

    values = {k: v for k, v in params.items() if k.split(".", 1)[0] in SECTIONS and "." in k}
    return resolve_config(overrides=values, source="trial params")


def _check_request(policy: str, alias: str, min_acc: float | None) -> Policy:
    if policy not in POLICIES:
        raise PromoteError(f"unknown policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    if policy == "best-diversity" and min_acc is None:
        raise PromoteError(
            "policy best-diversity needs --min-acc (e.g. --min-acc 0.9): the most diverse "
            "members are often the least accurate"
        )
    if min_acc is not None and not 0.0 <= min_acc <= 1.0:
        raise PromoteError(f"--min-acc is a validation accuracy in [0, 1]; got {min_acc}")
    if not ALIAS_RULE.fullmatch(alias) or alias == "latest" or re.fullmatch(r"v\d+", alias):
        raise PromoteError(
            f"alias {alias!r} is not allowed: use letters, digits, _ and -, and not `latest` "
            "or v<number> (MLflow reserves them), e.g. --alias champion"
        )
    return POLICIES[policy]


def _check_model_name(model_name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(model_name)  # MLflow's own rule, checked before anything is written
    except MlflowException as err:
        raise PromoteError(f"--model-name {model_name!r}: {err.message}") from None


def _named_trial(finished: list[Trial], trial_id: str, search: str) -> Trial:
    for trial in finished:
        if trial.trial_id == trial_id:
            return trial
    raise PromoteError(
        f"search {search!r} has no finished trial {trial_id!r}; finished trials: "
        f"{', '.join(t.trial_id for t in finished)}"
    )


def _finite(row: dict[str, Any]) -> bool:
    """Whether a finished trial's final accuracy and NLL on val and test are finite numbers,
    and no other final metric is infinite: a network that gives NaN or inf is never promoted.
    (MLflow's SQL stores keep inf as the largest float, so that counts as infinite.)"""
    finals = {k: v for k, v in row.items()
              if k.startswith(("val/", "test/")) and isinstance(v, float)}  # fmt: skip
    required = [f"{split}/{name}" for split in ("val", "test") for name in ("acc", "nll")]
    return all(_number(finals.get(key, math.nan)) for key in required) and all(
        _number(v) or math.isnan(v) for v in finals.values()
    )


def _number(value: float) -> bool:
    return abs(value) < sys.float_info.max  # False for inf, MLflow's stored inf, and NaN


def _metrics(row: dict[str, Any], prefix: str) -> dict[str, float]:
    """The record's `prefix` metrics of a finished trial (its kept epoch's), dropping NaN
    (metrics this trial never logged)."""
    return {
        k: float(v)
        for k, v in row.items()
        if k.startswith(prefix) and isinstance(v, int | float) and not math.isnan(v)
    }


def _holder(client: MlflowClient, model_name: str, alias: str) -> Holder | None:
    version = tracking.alias_holder(client, model_name, alias)
    if version is None:
        return None
    val = {}
    for key, value in version.tags.items():
        if key.startswith("val/"):
            try:
                val[key] = float(value)
            except ValueError:
                pass  # a hand-written tag: not a metric to compare on
    return Holder(
        str(version.version),
        version.tags.get(tracking.TRIAL_ID, "?"),
        version.tags.get(tracking.TRIAL_RUN_ID, ""),
        val,
    )


def _registered_version(client: MlflowClient, model_name: str, trial_run_id: str) -> str | None:
    """The version of `model_name` already made from the trial `trial_run_id`, if any."""
    for version in tracking.model_versions(client, model_name):
        if version.tags.get(tracking.TRIAL_RUN_ID) == trial_run_id:
            return str(version.version)
    return None


def _realias(plan: PromotionPlan) -> Promotion:
    """Point the alias at the version this trial already is (promoting it twice adds none)."""
    client = tracking.connect(plan.tracking_uri)
    version = client.get_model_version(plan.model_name, plan.registered)
    moved = plan.holder is None or plan.holder.version != plan.registered
    if moved:
        client.set_registered_model_alias(plan.model_name, plan.alias, plan.registered)
    measured = float(version.tags.get("promote/test/acc", "nan"))
    return Promotion(
        model_name=plan.model_name, version=plan.registered, alias=plan.alias,
        model_uri=f"models:/{plan.model_name}@{plan.alias}", search=plan.search,
        trial_id=plan.trial.trial_id, trial_run_id=plan.trial.run_id,
        promotion_run_id=version.run_id, policy=plan.policy.name, val_metrics=plan.trial.val,
        test_acc_logged=plan.trial.test.get("test/acc", math.nan), test_acc_measured=measured,
        replaced_version=plan.holder.version if plan.holder and moved else None,
        warnings=(), again=_again(plan),
    )  # fmt: skip


def _again(plan: PromotionPlan) -> str:
    """What promoting a trial that is already a version does (it makes no new version)."""
    where = (
        f"trial {plan.trial.trial_id} is already version {plan.registered} of {plan.model_name}"
    )
    if plan.holder is not None and plan.holder.version == plan.registered:
        return f"{where} and holds @{plan.alias}: nothing changed"
    was = f" (it was on version {plan.holder.version})" if plan.holder else ""
    return f"{where}: no new version made; @{plan.alias} now points to it{was}"


def _refusal(
    policy: Policy, min_acc: float | None, trial: Trial, holder: Holder, model: str, alias: str
) -> str | None:
    """Why the holder stays (it is better on the policy's metrics), or None."""
    from mixmo_search.pareto import pareto_front

    where = f"alias {alias!r} of {model!r} is held by version {holder.version}"
    missing = [m for m in policy.metrics if m not in holder.val]
    if missing:
        return (
            f"{where}, which has no {', '.join(missing)} tag to compare on (it was not "
            "promoted by mixmo_search.promote); pass --force to replace it"
        )
    if min_acc is not None and holder.val.get("val/acc", -1.0) < min_acc:
        return None  # the holder breaks the constraint the policy now asks for
    if pareto_front([trial.val, holder.val], policy.metrics, policy.modes) != [1]:
        return None
    return (
        f"{where} (trial {holder.trial_id}: {_shown(holder.val, policy)}), which is better on "
        f"policy {policy.name} than trial {trial.trial_id} ({_shown(trial.val, policy)}); "
        "pass --force to replace it"
    )


def _shown(metrics: dict[str, float], policy: Policy) -> str:
    return ", ".join(f"{m} {metrics[m]:.4f}" for m in policy.metrics if m in metrics)


def _carry_out(plan: PromotionPlan, device: str) -> Promotion:
    """Rebuild and re-test the network (still writing nothing), then log, register, alias."""
    import torch

    from mixmo_search import serving
    from mixmo_search.datasets import load_dataset
    from mixmo_search.inference import InputFormat, build_network, evaluate_split, resolve_device

    client = tracking.connect(plan.tracking_uri)
    trial = plan.trial
    params = client.get_run(trial.run_id).data.params
    cfg = trial_config(params)
    with tempfile.TemporaryDirectory() as tmp:
        best = tracking.download_artifact(client, trial.run_id, "checkpoint/best.pt", tmp)
        state = torch.load(best, map_location="cpu", weights_only=True)
    ds = load_dataset(cfg.data)
    network = build_network(cfg, InputFormat.of(ds), state["model"], resolve_device(device))

    # as the trainer scored test (its precision, the validation temperature): like with like
    measured, logits = evaluate_split(
        network.model, ds.test.to(network.normalize.scale.device), network.normalize,
        prefix="test", batch_size=cfg.run.eval_batch_size, precision=cfg.run.precision,
        temperature=trial.val.get("val/temperature"),
    )  # fmt: skip
    if not torch.isfinite(logits).all():
        raise PromoteError(
            f"trial {trial.trial_id}'s network gives non-finite outputs on the test split; it "
            "cannot be promoted (choose another with --trial, or retrain it)"
        )
    warnings = _test_check(trial, measured["test/acc"], len(ds.test))

    # writes start here: every check above has passed
    run_id, version = serving.publish(
        client, network, ds.test.images[:2], experiment_id=plan.experiment_id,
        search=plan.search, search_run_id=plan.parent_run_id, trial_id=trial.trial_id,
        trial_run_id=trial.run_id, policy=plan.policy.name, chosen_by=plan.chosen_by,
        min_acc=plan.min_acc, trial_metrics={**trial.val, **trial.test}, params=params,
        measured=measured, model_name=plan.model_name, alias=plan.alias,
    )  # fmt: skip
    return Promotion(
        model_name=plan.model_name,
        version=version,
        alias=plan.alias,
        model_uri=f"models:/{plan.model_name}@{plan.alias}",
        search=plan.search,
        trial_id=trial.trial_id,
        trial_run_id=trial.run_id,
        promotion_run_id=run_id,
        policy=plan.policy.name,
        val_metrics=trial.val,
        test_acc_logged=trial.test.get("test/acc", math.nan),
        test_acc_measured=measured["test/acc"],
        replaced_version=plan.holder.version if plan.holder else None,
        warnings=tuple(warnings),
    )


def _test_check(trial: Trial, measured_acc: float, n_test: int) -> list[str]:
    """A warning unless the re-evaluated test accuracy counts as many correct images."""
    logged = trial.test.get("test/acc")
    if logged is None:
        return [f"trial {trial.trial_id} logged no final/test/acc; the test check was skipped"]
    if round(logged * n_test) == round(measured_acc * n_test):
        return []
    return [
        f"test accuracy re-evaluated from trial {trial.trial_id}'s checkpoint is "
        f"{measured_acc:.4f}, but the trainer logged {logged:.4f} on {n_test} images: the data, "
        "the code or the device changed since training; check before relying on this model"
    ]


def _describe(plan: PromotionPlan) -> str:
    trial = plan.trial
    how = f"policy {plan.policy.name}" if plan.chosen_by == "policy" else "--trial"
    return (
        f"trial {trial.trial_id} of search {plan.search!r} ({how}: "
        f"{_shown(trial.val, plan.policy)}; test/acc {trial.test.get('test/acc', math.nan):.4f})"
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        prog="python -m mixmo_search.promote",
        description="Register a search's best trial in the MLflow model registry under an alias.",
    )
    parser.add_argument("--search", required=True, help="the search's name (tune --name)")
    parser.add_argument(
        "--policy",
        default="best-accuracy",
        help="how to pick the trial, on validation metrics: "
        + "; ".join(f"{p.name}: {p.help}" for p in POLICIES.values()),
    )
    parser.add_argument("--trial", help="promote this finished trial id instead of the policy's")
    parser.add_argument("--min-acc", type=float, help="only trials with val/acc >= this")
    parser.add_argument("--alias", default="champion", help="alias to move (default champion)")
    parser.add_argument("--model-name", help="registered model name (default mixmo-<search>)")
    parser.add_argument(
        "--force", action="store_true", help="replace an alias holder that is better"
    )
    parser.add_argument("--dry-run", action="store_true", help="show the plan, write nothing")
    parser.add_argument(
        "--mlflow-uri", help="tracking and registry store (default $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in the working directory)",
    )  # fmt: skip
    parser.add_argument("--experiment", default=tracking.EXPERIMENT)
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    request = dict(
        policy=args.policy, alias=args.alias, model_name=args.model_name, trial=args.trial,
        min_acc=args.min_acc, tracking_uri=args.mlflow_uri, experiment=args.experiment,
    )  # fmt: skip
    if args.dry_run:
        plan = plan_promotion(args.search, **request)
        print(f"would promote {_describe(plan)} to {plan.model_name}@{plan.alias}")
        if plan.refusal:
            print(f"and would refuse without --force: {plan.refusal}")
        return
    result = promote(args.search, force=args.force, **request)
    for warning in result.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    was = f" (was version {result.replaced_version})" if result.replaced_version else ""
    done = result.again or (
        f"promoted trial {result.trial_id} of search {result.search!r} ({result.policy}) as "
        f"{result.model_name} version {result.version}, alias {result.alias}{was}"
    )
    print(
        f"{done}\ntest/acc: trainer {result.test_acc_logged:.4f}, re-evaluated "
        f"{result.test_acc_measured:.4f}\n{_next_commands(result, args.mlflow_uri)}"
    )


def _next_commands(result: Promotion, uri: str | None) -> str:
    """How to use the promoted model, as it should be pasted: this interpreter (the virtual
    environment's when `python` on PATH is another), and its bin folder on PATH for `mlflow
    models serve`, which starts `uvicorn` by name."""
    import shlex

    from mixmo_search.search.summary import interpreter, script

    store = shlex.quote(uri or tracking.default_tracking_uri())
    model = shlex.quote(result.model_uri)
    folder = shlex.quote(os.path.dirname(sys.executable))
    path = "" if script("mlflow") == "mlflow" else f'PATH={folder}:"$PATH" '
    return (
        f"load it: {interpreter()} -m mixmo_search.predict --model {model} "
        f"--mlflow-uri {store} --images DIR\n"
        f"serve it: {path}MLFLOW_TRACKING_URI={store} mlflow models serve -m {model} "
        "--env-manager local --host 127.0.0.1 --port 5001"
    )


if __name__ == "__main__":
    main()
