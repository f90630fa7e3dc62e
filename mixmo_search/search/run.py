"""Run a planned search: start or join Ray, drive Optuna through Tune, track in MLflow.

`run_search` starts Ray, creates the parent MLflow run, runs Tune and writes the summary (best
trial, Pareto set, counts) to the parent run and `search.json`; the plan comes from
`search.plan.make_plan`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from typing import Any

from mixmo_search import files, tracking, trial_table
from mixmo_search.checkpoint import code_revision
from mixmo_search.search import cluster, study_storage
from mixmo_search.search.plan import (
    MACHINE_KEYS,
    SEARCH_META,
    SearchPlan,
    read_meta,
    sized_by_cluster,
)
from mixmo_search.search.summary import summarize


def _write_meta(plan: SearchPlan, parent_id: str, status: str) -> None:
    meta = {
        "parent_run_id": parent_id,
        "mlflow_uri": plan.mlflow_uri,
        "experiment": plan.experiment,
        "optuna_storage": plan.study_url,
        "space": str(plan.space.path),
        "budget": {"trials": plan.trials, "time_s": plan.time_s},
        "base": {k: v for k, v in plan.base.items() if k not in MACHINE_KEYS},
        "status": status,
    }
    files.write_text(plan.path / SEARCH_META, json.dumps(meta, indent=2))


def run_search(plan: SearchPlan) -> dict[str, Any]:
    """Run (or resume) the planned search; return its summary.

    Ray starts first, so a cluster that refuses this driver writes nothing; the parent run
    and `search.json` come once Ray and the store both answer.
    """
    if not plan.verbose:
        _quiet()
    if plan.address is None:
        cluster.start_local(cpus=plan.cpus_total, gpus=plan.gpus_total)
    else:
        cluster.join(plan.address)
        if plan.cpus_total is None:
            plan = sized_by_cluster(plan)
    try:
        client = tracking.connect(plan.mlflow_uri)
        exp_id = tracking.experiment_id(client, plan.experiment)
        if plan.resume:
            from mixmo_search.search.lost_trials import end_lost_trials

            parent_id = read_meta(plan.path)["parent_run_id"]
            tracking.set_status(client, parent_id, "running")
            lost = end_lost_trials(plan, client, exp_id, parent_id)
            if lost:  # its driver was killed: see lost_trials
                print(f"{lost} trial(s) started after Ray Tune's last save were ended as lost")
        else:
            plan.path.mkdir(parents=True)
            parent_id = _start_parent(client, exp_id, plan)
        _write_meta(plan, parent_id, "running")
        started = time.monotonic()
        statuses: list[str] = []
        try:
            statuses = _run_tune(plan, exp_id, parent_id)
        except KeyboardInterrupt:
            pass
        finally:
            from mixmo_search.search.tracking_queue import flush_all

            flush_all()  # every trial update written before the search reads them back
            interrupted = _was_interrupted(plan, statuses, time.monotonic() - started)
            if interrupted:  # also on a crash: leave nothing RUNNING; --resume reopens them
                _mark_interrupted(client, exp_id, parent_id)
                _write_meta(plan, parent_id, "interrupted")
    finally:
        import ray

        ray.shutdown()
    summary = summarize(trial_table.load_trials(client, exp_id, parent_id), plan)
    summary["interrupted"] = interrupted
    pareto = {row["run_id"] for row in summary["pareto"]}
    for run_id in summary["finished_run_ids"]:
        client.set_tag(run_id, tracking.PARETO, str(run_id in pareto).lower())
    client.log_text(parent_id, tracking.summary_json(summary), "summary.json")
    if interrupted:
        return summary
    tracking.log_metrics(
        client, parent_id, {f"trials/{k}": v for k, v in summary["counts"].items()}, step=0
    )
    if summary["best"]:
        client.set_tag(parent_id, tracking.BEST_TRIAL, summary["best"]["trial_id"])
        tracking.log_metrics(client, parent_id, summary["best"]["objectives"], step=0)
    tracking.set_status(client, parent_id, "finished")
    _write_meta(plan, parent_id, "finished")
    return summary


def _quiet() -> None:
    """Only the search's own lines on the terminal (`ProgressLines`); libraries say warnings.

    With the legacy reporter and verbose=0 Tune prints no tables and no TensorBoard hint, and
    a failed trial's traceback stays in its error file (its reason is printed in one line).
    """
    import logging

    import optuna

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _start_parent(client: Any, exp_id: str, plan: SearchPlan) -> str:
    import yaml

    space = plan.space
    text = space.path.read_text()
    metrics, modes = space.metric_modes()
    return tracking.start_search_run(
        client,
        exp_id,
        name=plan.name,
        tags={
            tracking.SPACE_FILE: str(space.path),
            tracking.SPACE_DIGEST: hashlib.sha256(text.encode()).hexdigest()[:16],
            tracking.CODE_REVISION: code_revision(),
            tracking.SAMPLER: space.sampler.type,
            tracking.OBJECTIVES: json_dumps(
                [{"metric": m, "mode": d} for m, d in zip(metrics, modes, strict=True)]
            ),
            tracking.STORAGE: str(plan.path),
            tracking.STATUS: "running",
            **({tracking.SIMULATED_GPUS: "true"} if plan.simulated_gpus else {}),
        },  # fmt: skip
        params={
            "sampler": space.sampler.type,
            "sampler.seed": space.sampler.seed,
            "sampler.options": space.sampler.options,
            "scheduler": space.scheduler.type,
            "budget.trials": plan.trials,
            "budget.time_s": plan.time_s,
            "resources.gpus": plan.gpus_per_trial,
            "resources.cpus": plan.cpus_per_trial,
            "preset": space.preset,
            "n_objectives": space.n_objectives,
        },
        artifacts={
            "space.yaml": text,
            "space_resolved.yaml": yaml.safe_dump(
                {"base": plan.base, "params": [p.key for p in space.params]}, sort_keys=False
            ),
            "versions.json": json_dumps(_versions()),
        },
    )


def json_dumps(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def _versions() -> dict[str, str]:
    import mlflow
    import optuna
    import ray
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "ray": ray.__version__, "optuna": optuna.__version__,
            "mlflow": mlflow.__version__, "code": code_revision()}  # fmt: skip


def _run_tune(plan: SearchPlan, exp_id: str, parent_id: str) -> list[str]:
    """Build the Tuner (or restore it) and fit it on the running Ray; return trial statuses."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from mixmo_search.search.mlflow_callback import MlflowTrials
    from mixmo_search.search.optuna_search import TrialOutcomeSearch, seed_study
    from mixmo_search.search.progress import ProgressLines, report_epochs
    from mixmo_search.search.samplers import sampler_for
    from mixmo_search.search.trainable import train_trial

    space = plan.space
    # a checkpoint every epoch is by design (resume, retries): no warning about it
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    trainable = tune.with_resources(
        tune.with_parameters(
            train_trial, configs=plan.trial_configs, simulated_gpus=plan.simulated_gpus
        ),
        {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial},
    )
    guard = space.guard or space.objectives[0]
    callbacks = [MlflowTrials(plan.mlflow_uri, exp_id, parent_id, plan)]
    if not plan.verbose:
        rungs = report_epochs(
            space.scheduler.type,
            space.scheduler.grace_period,
            space.scheduler.reduction_factor,
            space.scheduler.max_t,
        )
        callbacks.append(ProgressLines(guard.metric, guard.mode, rungs, space.scheduler.max_t))
    run_config = tune.RunConfig(
        name=plan.name,
        storage_path=str(plan.storage),
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=2),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=2 if plan.verbose else 0,
    )
    if plan.resume and tune.Tuner.can_restore(str(plan.path)):
        tuner = tune.Tuner.restore(
            str(plan.path), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        storage = study_storage.open_storage(plan.study_url)
        if plan.warm_start is not None:
            added = seed_study(
                storage,
                plan.name,
                space,
                source_name=plan.warm_start.name,
                source=plan.warm_start_storage or study_storage.default_url(plan.warm_start),
            )
            print(f"warm start: {added} trials of {plan.warm_start.name} seed the sampler")
        metrics, modes = space.metric_modes()
        single = space.n_objectives == 1
        searcher = TrialOutcomeSearch(
            space=space.define_by_run,
            metric=metrics[0] if single else metrics,
            mode=modes[0] if single else modes,
            sampler=sampler_for(space),
            study_name=plan.name,
            storage=storage,
        )
        if space.scheduler.type == "asha":
            scheduler = ASHAScheduler(
                metric=guard.metric, mode=guard.mode,
                time_attr="training_iteration", max_t=space.scheduler.max_t,
                grace_period=space.scheduler.grace_period,
                reduction_factor=space.scheduler.reduction_factor,
            )  # fmt: skip
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=plan.concurrency),
                scheduler=scheduler,
                num_samples=plan.trials or -1,
                time_budget_s=plan.time_s,
                reuse_actors=True,  # no new process (and torch import) per trial
            ),
            run_config=run_config,
        )
    tuner.fit()
    return _statuses(plan)


def _was_interrupted(plan: SearchPlan, statuses: list[str], elapsed: float) -> bool:
    """Stopped before its budget: a trial left unfinished, or fewer trials than asked."""
    if not statuses or any(s not in ("TERMINATED", "ERROR") for s in statuses):
        return True
    out_of_time = plan.time_s is not None and elapsed >= plan.time_s
    return plan.trials is not None and len(statuses) < plan.trials and not out_of_time


def _statuses(plan: SearchPlan) -> list[str]:
    """Trial statuses as Tune saved them in the experiment state."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(plan.path))
    return [trial.status for trial in analysis.trials]


def _mark_interrupted(client: Any, exp_id: str, parent_id: str) -> None:
    """No run stays RUNNING after Ctrl-C or a crash; --resume sets them running again."""
    for run_id in tracking.trial_runs(client, exp_id, parent_id).values():
        if client.get_run(run_id).data.tags.get(tracking.STATUS) == "running":
            tracking.set_status(client, run_id, "interrupted")
    tracking.set_status(client, parent_id, "interrupted")
