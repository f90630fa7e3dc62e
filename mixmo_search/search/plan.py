"""Plan a search: check everything it needs before anything is started or written.

`make_plan` checks the space, resources, cluster address, MLflow store, Optuna storage,
storage folder, names and resume state, and returns a `SearchPlan`; `search.run` carries it
out. `search.json` in the search's folder (`read_meta`) records its store, Optuna storage,
budget and status, which `--resume` and `--warm-start` read.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mixmo_search import files, tracking
from mixmo_search.errors import UserError
from mixmo_search.search import cluster, placement, record, study_storage
from mixmo_search.search.space import SearchSpace

DEFAULT_STORAGE = Path("runs/searches")
SEARCH_META = record.SEARCH_META
OPTUNA_DB = study_storage.OPTUNA_DB  # the default Optuna study, beside the trials
# trial settings that depend on the machine a search runs from, not on the search
MACHINE_KEYS = ("run.device", "run.threads")


@dataclass(frozen=True)
class SearchPlan:
    space: SearchSpace
    name: str
    storage: Path  # absolute; the search lives in storage / name
    mlflow_uri: str
    experiment: str
    trials: int | None  # None: until the time budget ends
    time_s: float | None
    gpus_total: float
    cpus_total: float | None  # None: all the CPUs of the cluster joined with --address
    gpus_per_trial: float
    cpus_per_trial: float
    concurrency: int  # trials at a time (for a cluster without --cpus: by its GPUs so far)
    device: str  # what trials train on: cpu or cuda
    address: str | None  # an existing Ray cluster (host:port), or None for a local one
    resume: bool
    base: dict[str, Any]  # flat overrides every trial gets (see `_trial_base`)
    finished: bool = False  # resuming a search that already ran its whole budget
    warm_start: Path | None = None  # an earlier search's folder whose trials seed the sampler
    verbose: bool = False  # Ray Tune's own progress tables instead of one line per event
    simulated_gpus: bool = False  # MIXMO_SIMULATE_GPUS: logical GPUs, trials train on the CPU
    notes: tuple[str, ...] = ()  # printed under the plan (e.g. a dry run for other GPUs)
    optuna_storage: str = ""  # the study's database URL ("": sqlite beside the trials)
    warm_start_storage: str | None = None  # the database of the warm start's study

    @property
    def study_url(self) -> str:
        return self.optuna_storage or study_storage.default_url(self.path)

    @property
    def path(self) -> Path:
        return self.storage / self.name

    def describe(self) -> str:
        s = self.space
        lines = [
            f"search {self.name!r} from {s.path}",
            f"  base: preset {s.preset} + {s.overrides or 'no overrides'}",
            "  params:",
            *[f"    {p.key}: {_describe_param(p)}" for p in s.params],
            "  objective: " + ", ".join(f"{o.metric} ({o.mode})" for o in s.objectives),
            f"  sampler: {s.sampler.type} (seed {s.sampler.seed}) {s.sampler.options or ''}",
            f"  scheduler: {s.scheduler.type}"
            + (f" on {s.guard.metric}, grace {s.scheduler.grace_period}, factor "
               f"{s.scheduler.reduction_factor}, max_t {s.scheduler.max_t} epochs"
               if s.scheduler.type == "asha" and s.guard else ""),
            f"  budget: {self.trials or 'unlimited'} trials"
            + (f", {self.time_s:.0f} s" if self.time_s else ""),
            f"  resources: {self.gpus_per_trial:g} GPU + {self.cpus_per_trial:g} CPU a trial on "
            f"{self.device}; "
            + ("as many at a time as the cluster's CPUs allow"
               if self.cpus_total is None and not self.gpus_per_trial else
               f"up to {self.concurrency} at a time ({self.gpus_total:g} GPU, "
               + (f"{self.cpus_total:g} CPU in all)" if self.cpus_total is not None else
                  "and as many as the cluster's CPUs allow)")),
            f"  ray: {self.address or 'local, 127.0.0.1'}",
            f"  storage: {self.path}",
            f"  mlflow: {self.mlflow_uri} (experiment {self.experiment})",
            f"  optuna: {self.study_url}",
            *[f"  note: {note}" for note in self.notes],
        ]  # fmt: skip
        return "\n".join(lines)


def _describe_param(p: Any) -> str:
    if p.type == "fixed":
        text = f"fixed {p.value!r}"
    elif p.type == "categorical":
        text = f"one of {list(p.choices)}"
    else:
        text = f"{p.type} [{p.low}, {p.high}]"
    return text + (f" when {p.when}" if p.when else "")


def make_plan(
    space: SearchSpace,
    *,
    name: str | None = None,
    gpus: float | None = None,
    cpus: float | None = None,
    trials: int | None = None,
    storage: str | Path | None = None,
    mlflow_uri: str | None = None,
    experiment: str = tracking.EXPERIMENT,
    address: str | None = None,
    resume: bool = False,
    dry_run: bool = False,
    warm_start: str | None = None,
    verbose: bool = False,
    optuna_storage: str | None = None,
) -> SearchPlan:
    """Check every flag against the space, the machine, the store and the storage; raise
    UserError before anything is started or written. A dry run does not ask the cluster of
    `--address` whether it answers, so a cluster search can be planned from anywhere."""
    name = name or space.name
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise UserError(
            f"--name {name!r}: use letters, digits, `_`, `.` and `-` (it names a folder and "
            "the MLflow runs), e.g. cutmix-1"
        )
    if trials is not None and trials < 1:
        raise UserError(f"--trials must be >= 1, got {trials}")
    for flag, value in (("--gpus", gpus), ("--cpus", cpus)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"{flag} must be a finite number >= 0, got {value}")
    notes: list[str] = []
    if address is not None:
        simulated = placement.local_gpus(joining_cluster=True).simulated  # refused: False
        address = cluster.check_address(address, reachable=not dry_run)
        gpus_total = float(gpus if gpus is not None else space.resources.gpus)
        cpus_total = float(cpus) if cpus else None  # None: sized once the cluster answers
    else:
        local = placement.local_gpus()
        visible, simulated = local.count, local.simulated
        gpus_total = float(space.resources.gpus and visible) if gpus is None else float(gpus)
        devices = "logical GPU(s) (MIXMO_SIMULATE_GPUS)" if simulated else "CUDA device(s)"
        if gpus_total > visible and not dry_run:
            raise UserError(
                f"--gpus {gpus:g} but this machine has {visible} {devices}; use "
                f"--gpus {visible} (0 trains on the CPU), join a cluster with --address, or "
                "add --dry-run to only see the plan"
            )
        cpus_total = float(cpus or os.cpu_count() or 1)
        if gpus_total > visible:  # a dry run, e.g. a search for a GPU machine planned on a laptop
            notes.append(
                f"planned for {gpus_total:g} GPUs but this machine has {visible} {devices}: "
                "run the same command where they are, or join their cluster with --address"
                + ("" if cpus else "; the CPUs are this machine's: pass --cpus for the target's")
            )
        if simulated:
            notes.append(
                f"MIXMO_SIMULATE_GPUS={visible}: a testing aid; Ray schedules {visible} logical "
                "GPUs and trials given one train on the CPU"
            )
    if cpus_total is not None and cpus_total <= 0:
        raise UserError(f"--cpus must be > 0, got {cpus_total:g}")
    gpus_per_trial = space.resources.gpus if gpus_total > 0 else 0.0
    cpus_per_trial = space.resources.cpus
    if cpus is None and address is None:
        cpus_per_trial = min(cpus_per_trial, cpus_total)  # a smaller machine: fewer threads
    if gpus_per_trial > gpus_total:
        raise UserError(
            f"{space.path}: `resources.gpus` asks {gpus_per_trial:g} GPU a trial but the "
            f"search may use {gpus_total:g} (--gpus); raise --gpus or lower resources.gpus"
        )
    if cpus_total is not None and cpus_per_trial > cpus_total:
        raise UserError(
            f"{space.path}: `resources.cpus` asks {cpus_per_trial:g} CPUs a trial but the "
            f"search may use {cpus_total:g} (--cpus); raise --cpus or lower resources.cpus"
        )
    concurrency = _concurrency(gpus_total, cpus_total, gpus_per_trial, cpus_per_trial)
    storage_path = _check_storage(storage)
    path = storage_path / name
    finished = False
    if resume:
        meta = read_meta(path)
        record.check_same_space(meta, name, space.path.read_text())
        if mlflow_uri and mlflow_uri != meta["mlflow_uri"]:
            raise UserError(
                f"search {name!r} logs to {meta['mlflow_uri']}; resume it with that "
                "--mlflow-uri (or without --mlflow-uri)"
            )
        mlflow_uri, experiment = meta["mlflow_uri"], meta["experiment"]
        budget = meta["budget"]["trials"]
        if trials is not None and trials != budget:
            raise UserError(
                f"search {name!r} keeps the budget it started with ({budget} trials); to run "
                f"{trials} trials, start a new search that learns from this one: "
                f"--name NEW --warm-start {name}"
            )
        trials, finished = budget, meta["status"] == "finished"
        base = meta["base"]  # as the search started, so its checkpoints still match
        recorded = meta.get("optuna_storage") or study_storage.default_url(path)
        if optuna_storage and optuna_storage != recorded:
            raise UserError(
                f"search {name!r} keeps its Optuna study in {recorded}; resume it with that "
                "--optuna-storage (or without --optuna-storage)"
            )
        optuna_storage = recorded
    else:
        base = _trial_base(space)
    if not resume and path.exists():
        raise UserError(
            f"a search named {name!r} already exists in {storage_path}; pass --resume to "
            "continue it, or --name NEW to start another"
        )
    warm_path, warm_url = (
        _check_warm_start(warm_start, storage_path, resume, reachable=not dry_run)
        if warm_start
        else (None, None)
    )
    if optuna_storage and not finished:
        study_storage.check(
            optuna_storage, name, exists=None if resume else False, reachable=not dry_run
        )
    device = "cuda" if gpus_per_trial > 0 and not simulated else "cpu"
    base = {**base, "run.device": device, "run.threads": max(1, int(cpus_per_trial))}
    mlflow_uri = mlflow_uri or tracking.default_tracking_uri()
    tracking.check_store(mlflow_uri)
    if not dry_run and not tracking.sqlite_path(mlflow_uri):  # a server: does it answer?
        tracking.connect(mlflow_uri)
    return SearchPlan(
        space=space,
        name=name,
        storage=storage_path,
        mlflow_uri=mlflow_uri,
        experiment=experiment,
        trials=trials or space.budget.trials,
        time_s=space.budget.time_s,
        gpus_total=gpus_total,
        cpus_total=cpus_total,
        gpus_per_trial=gpus_per_trial,
        cpus_per_trial=cpus_per_trial,
        concurrency=concurrency,
        device=device,
        address=address,
        resume=resume,
        base=base,
        finished=finished,
        warm_start=warm_path,
        verbose=verbose,
        simulated_gpus=simulated,
        notes=tuple(notes),
        optuna_storage=optuna_storage or "",
        warm_start_storage=warm_url,
    )


def _check_warm_start(
    name: str, storage: Path, resume: bool, *, reachable: bool
) -> tuple[Path, str]:
    """The earlier search's folder and the URL of its Optuna study (as its search.json
    records it; beside its trials for searches from before `--optuna-storage`)."""
    if resume:
        raise UserError("--warm-start starts a new search; a resumed search keeps its study")
    path = storage / name
    if (path / SEARCH_META).is_file():
        url = read_meta(path).get("optuna_storage") or study_storage.default_url(path)
    elif (path / OPTUNA_DB).is_file():
        url = study_storage.default_url(path)
    else:
        known = sorted(
            {p.parent.name for pattern in (f"*/{SEARCH_META}", f"*/{OPTUNA_DB}")
             for p in storage.glob(pattern)} if storage.is_dir() else set()
        )  # fmt: skip
        raise UserError(
            f"--warm-start {name}: no search {name!r} with an Optuna study in {storage}; "
            f"searches there: {', '.join(known) or 'none'}"
        )
    try:
        study_storage.check(url, name, exists=True, reachable=reachable)
    except study_storage.StudyStorageError as err:
        raise UserError(f"--warm-start {name}: {err}") from None
    return path, url


def _trial_base(space: SearchSpace) -> dict[str, Any]:
    """The space's base overrides, with the data folder made absolute: Tune runs each trial
    in its own folder, where a relative `data.root` would download the data set again."""
    root = Path(space.base_values["data.root"]).expanduser()
    return {**space.overrides, "data.root": str(root.absolute())}


def _concurrency(
    gpus_total: float, cpus_total: float | None, gpus_per_trial: float, cpus_per_trial: float
) -> int:
    """Trials that fit at once in the CPUs and GPUs the search may use (at least 1)."""
    fits = [math.inf if cpus_total is None else cpus_total // cpus_per_trial]
    if gpus_per_trial > 0:
        fits.append(math.floor(gpus_total / gpus_per_trial + 1e-9))
    return max(1, int(min(fits))) if min(fits) < math.inf else 1


def sized_by_cluster(plan: SearchPlan) -> SearchPlan:
    """A cluster plan without --cpus, sized by the CPUs the joined cluster has."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1))
    return replace(
        plan,
        cpus_total=cpus,
        concurrency=_concurrency(plan.gpus_total, cpus, plan.gpus_per_trial, plan.cpus_per_trial),
    )


def _check_storage(storage: str | Path | None) -> Path:
    """The absolute storage folder, checked to be creatable or writable (nothing is made)."""
    if "://" in str(storage or ""):
        raise UserError("--storage takes a local or shared-filesystem path (e.g. /mnt/searches)")
    path = Path(storage or DEFAULT_STORAGE).expanduser().resolve()
    reason = files.unwritable(path)
    if reason:
        raise UserError(
            f"--storage {path}: {reason}; choose a folder you can write (on a cluster, one "
            "every node mounts)"
        )
    return path


def read_meta(path: Path) -> dict[str, Any]:
    """The search's own record (`search.json`, checked by `search.record`), as a dict."""
    return record.read(path).model_dump()
