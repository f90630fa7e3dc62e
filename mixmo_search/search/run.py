"""Run a planned search: start or join Ray, drive Optuna through Tune, track in MLflow.

`run_search` claims the search's name (`record.Claim`), starts Ray, creates the parent MLflow
run, runs Tune and writes the summary (best trial, Pareto set, counts) to the parent run and
`search.json`; the plan comes from `search.plan.make_plan`. A search ends finished (its trials
ran, or its time budget ran out: then the trials it stopped are out_of_time) or interrupted
(Ctrl-C, SIGTERM, a crash: the trials in flight are interrupted and `--resume` continues them).
"""

from __future__ import annotations

import os
import platform
from typing import Any

from mixmo_search import tracking, trial_table
from mixmo_search.checkpoint import code_revision
from mixmo_search.errors import EXIT_INTERRUPTED
from mixmo_search.search import cluster, outcomes, record
from mixmo_search.search.outcomes import Ending, Outcome
from mixmo_search.search.plan import MACHINE_KEYS, SearchPlan, read_meta, sized_by_cluster
from mixmo_search.search.signals import STOP
from mixmo_search.search.summary import summarize
from mixmo_search.search.tracking_queue import Patient

ENDED_BY_TUNE = ("TERMINATED", "ERROR")  # Tune's statuses of a trial it is done with


def run_search(plan: SearchPlan) -> dict[str, Any]:
    """Run (or resume) the planned search; return its summary.

    The name is claimed before Ray starts, so a search that loses it starts nothing; Ray
    starts next, so a cluster that refuses this driver writes nothing; the parent run and
    `search.json` come once Ray and the store both answer.
    """
    claim = record.Claim(plan.path, new=not plan.resume)
    try:
        return _run(plan)
    except KeyboardInterrupt:  # a stop signal before Tune ran: nothing was tuned
        resumable = (plan.path / record.SEARCH_META).exists()
        then = "; resume it with --resume" if resumable else ": nothing was run"
        print(f"stopped before the search's first trial{then}", flush=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        claim.release()


def _run(plan: SearchPlan) -> dict[str, Any]:
    if not plan.verbose:
        _quiet()
    STOP.reset()
    session = None
    if plan.address is None:
        session = cluster.start_local(cpus=plan.cpus_total, gpus=plan.gpus_total)
    else:
        cluster.join(plan.address)
        if plan.cpus_total is None:
            plan = sized_by_cluster(plan)
    STOP.install()  # after ray.init, whose own SIGTERM handler exits mid-step
    try:
        client = tracking.connect(plan.mlflow_uri)
        exp_id = tracking.experiment_id(client, plan.experiment)
        meta = _open_search(plan, client, exp_id)
        # from here on a store that stops answering is waited for, not a crash
        client = Patient(client, uri=plan.mlflow_uri, doing="end the search")
        interrupted = _tune_until_stopped(plan, client, exp_id, meta)
    finally:
        import ray

        ray.shutdown()
        cluster.remove_session(session)
    return _conclude(plan, client, exp_id, meta, interrupted)


def _open_search(plan: SearchPlan, client: Any, exp_id: str) -> record.SearchRecord:
    """The search's record, written, with its parent run (created, or reopened on --resume)."""
    document = record.space_document(plan.space.path.read_text())
    if plan.resume:
        from mixmo_search.search.lost_trials import end_lost_trials

        parent_id = read_meta(plan.path)["parent_run_id"]
        tracking.set_status(client, parent_id, "running")
        lost = end_lost_trials(plan, client, exp_id, parent_id)
        if lost:  # its driver was killed: see lost_trials
            print(f"{lost} trial(s) started after Ray Tune's last save were ended as lost")
    else:
        parent_id = _start_parent(client, exp_id, plan, record.space_digest(document))
    meta = record.SearchRecord(
        parent_run_id=parent_id,
        mlflow_uri=plan.mlflow_uri,
        experiment=plan.experiment,
        optuna_storage=plan.study_url,
        space=str(plan.space.path),
        budget=record.Budget(trials=plan.trials, time_s=plan.time_s),
        base={k: v for k, v in plan.base.items() if k not in MACHINE_KEYS},
        status="running",
        space_digest=record.space_digest(document),
        space_document=document,
    )
    record.write(plan.path, meta)
    return meta


def _tune_until_stopped(
    plan: SearchPlan, client: Any, exp_id: str, meta: record.SearchRecord
) -> bool:
    """Run Tune until the search ends, then end the trials it left running; whether the
    search was interrupted (see `_interrupted`)."""
    from mixmo_search.search.tracking_queue import flush_all

    statuses: list[str] = []
    try:
        statuses = _run_tune(plan, exp_id, meta.parent_run_id)
    except KeyboardInterrupt:
        pass
    finally:
        signalled = STOP.received is not None
        flush_all()  # every trial update written before the search reads them back
        interrupted = _interrupted(plan, statuses, signalled=signalled)
        # also on a crash: leave nothing RUNNING; --resume reopens them
        stopped_by = Outcome.INTERRUPTED if interrupted else Outcome.OUT_OF_TIME
        _end_stopped_trials(plan, client, exp_id, meta.parent_run_id, stopped_by)
        if interrupted:
            tracking.set_status(client, meta.parent_run_id, "interrupted")
            record.write(plan.path, meta.model_copy(update={"status": "interrupted"}))
    return interrupted


def _interrupted(plan: SearchPlan, statuses: list[str], *, signalled: bool) -> bool:
    """Whether Tune stopped before the search's budget: a trial left unfinished in its saved
    state, or fewer trials than asked that no time budget explains. (Tune ends the trials
    its time budget stops; a stop signal or a crash leaves them to --resume.)"""
    if not statuses or any(s not in ENDED_BY_TUNE for s in statuses):
        return True
    short = plan.trials is not None and len(statuses) < plan.trials
    return short and (signalled or plan.time_s is None)


def _end_stopped_trials(
    plan: SearchPlan, client: Any, exp_id: str, parent_id: str, stopped_by: Outcome
) -> None:
    """End the trials the search stopped (their runs still `running`) as `stopped_by`, and
    tell the study the ones that will not resume (out of time)."""
    from mixmo_search.search.optuna_search import tell_stopped
    from mixmo_search.search.progress import say_ended

    objectives = [o.metric for o in plan.space.objectives]
    trials = trial_table.load_trials(client, exp_id, parent_id)
    stopped = trials[trials["status"] == "running"] if len(trials) else trials
    endings: dict[int, Ending] = {}
    for row in stopped.to_dict("records"):
        last = {outcomes.EPOCH: row.get("epochs")}  # what MLflow has of its last result
        ending = outcomes.classify(last, objectives=objectives, stopped_by=stopped_by)
        tracking.set_status(client, row["run_id"], ending.outcome.value)
        client.update_run(row["run_id"], name=ending.run_name(row["trial_id"]))
        say_ended(row["trial_id"], ending)
        if row.get("optuna_trial") == row.get("optuna_trial"):  # NaN: not tagged
            endings[int(row["optuna_trial"])] = ending
    if stopped_by is Outcome.OUT_OF_TIME:  # and the trials asked for that never started
        tell_stopped(plan.study_url, plan.name, endings, others=Ending(stopped_by))


def _conclude(
    plan: SearchPlan, client: Any, exp_id: str, meta: record.SearchRecord, interrupted: bool
) -> dict[str, Any]:
    """The summary, logged to the parent run; a search that ran its budget is closed."""
    parent_id = meta.parent_run_id
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
        objectives = {k: v for k, v in summary["best"]["objectives"].items() if v is not None}
        tracking.log_metrics(client, parent_id, objectives, step=0)
    tracking.set_status(client, parent_id, "finished")
    record.write(plan.path, meta.model_copy(update={"status": "finished"}))
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


def _start_parent(client: Any, exp_id: str, plan: SearchPlan, digest: str) -> str:
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
            tracking.SPACE_DIGEST: digest,
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

    from mixmo_search.search.actor_reuse import requeue_when_a_reused_actor_dies
    from mixmo_search.search.mlflow_callback import MlflowTrials
    from mixmo_search.search.progress import ProgressLines, report_epochs
    from mixmo_search.search.retention import CheckpointPruning
    from mixmo_search.search.scheduler import RECORD
    from mixmo_search.search.signals import HandOverSignals
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
    objectives = [o.metric for o in space.objectives]
    callbacks = [MlflowTrials(plan.mlflow_uri, exp_id, parent_id, plan), HandOverSignals(),
                 CheckpointPruning(plan.path)]  # fmt: skip
    if not plan.verbose:
        rungs = report_epochs(
            space.scheduler.type,
            space.scheduler.grace_period,
            space.scheduler.reduction_factor,
            space.scheduler.max_t,
        )
        lines = ProgressLines(guard.metric, guard.mode, rungs, space.scheduler.max_t,
                              objectives=objectives, rungs=plan.path / RECORD)  # fmt: skip
        callbacks.append(lines)
    run_config = tune.RunConfig(
        name=plan.name,
        storage_path=str(plan.storage),
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=2),  # crashes; see trainable
        # Tune keeps every checkpoint; CheckpointPruning deletes the ones no save needs
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        verbose=2 if plan.verbose else 0,
    )
    if plan.resume and tune.Tuner.can_restore(str(plan.path)):
        tuner = tune.Tuner.restore(
            str(plan.path), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = tune.Tuner(trainable, tune_config=_tune_config(plan, guard), run_config=run_config)
    requeue_when_a_reused_actor_dies()  # trials reuse processes (reuse_actors); see there
    tuner.fit()
    return _statuses(plan)


def _tune_config(plan: SearchPlan, guard: Any) -> Any:
    """The searcher (Optuna, warm-started if asked), the scheduler and the budget."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from mixmo_search.search import study_storage
    from mixmo_search.search.optuna_search import StudySearcher, seed_study
    from mixmo_search.search.samplers import sampler_for
    from mixmo_search.search.scheduler import RECORD, make_scheduler

    space = plan.space
    if plan.warm_start is not None:
        added = seed_study(
            study_storage.open_storage(plan.study_url),
            plan.name,
            space,
            source_name=plan.warm_start.name,
            source=plan.warm_start_storage or study_storage.default_url(plan.warm_start),
        )
        print(f"warm start: {added} trials of {plan.warm_start.name} seed the sampler")
    searcher = StudySearcher(
        define_by_run=space.define_by_run,
        objectives=list(zip(*space.metric_modes(), strict=True)),
        sampler=sampler_for(space),
        study_name=plan.name,
        storage_url=plan.study_url,
        rungs=plan.path / RECORD,
    )
    return tune.TuneConfig(
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=plan.concurrency),
        scheduler=make_scheduler(space.scheduler, guard, plan.path),
        num_samples=plan.trials or -1,
        time_budget_s=plan.time_s,
        reuse_actors=True,  # no new process (and torch import) per trial
    )


def _statuses(plan: SearchPlan) -> list[str]:
    """Trial statuses as Tune saved them in the experiment state."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(plan.path))
    return [trial.status for trial in analysis.trials]
