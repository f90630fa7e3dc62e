"""Plan a search: check everything it needs before anything is started or written.

`make_plan` is a short sequence of named checks — the name, the resources, the storage
folder, the resume state, the MLflow store and experiment, the Optuna storage, the warm
start, the trials' memory — each returning a small record, and returns the `SearchPlan`
that `search.run` carries out. The space itself was checked when it loaded (`load_space`,
`space_check`): every value it can draw, every network shape. `search.json` in the search's
folder (`read_meta`) records its store, Optuna storage, budget and status, which `--resume`
and `--warm-start` read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mixmo_search import files, preflight, tracking, tracking_auth
from mixmo_search.config import ConfigBuilder
from mixmo_search.errors import ConfigError, UserError
from mixmo_search.search import cluster, placement, record, study_storage
from mixmo_search.search.schema import NAME_HELP, NAME_RULE
from mixmo_search.search.space import SearchSpace

DEFAULT_STORAGE = Path("runs/searches")
SEARCH_META = record.SEARCH_META
OPTUNA_DB = study_storage.OPTUNA_DB  # the default Optuna study, beside the trials
# trial settings that depend on the machine a search runs from, not on the search
MACHINE_KEYS = ("run.device", "run.threads")
MAX_EXPERIMENT_NAME = 250


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
    base: dict[str, Any]  # flat overrides every trial gets on the preset (`_trial_base`)
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

    @property
    def trial_configs(self) -> ConfigBuilder:
        """What every trial's config is built on: the preset with `base` (one validation)."""
        return ConfigBuilder.of(
            ConfigBuilder.of(preset=self.space.preset).build(self.base).to_dict()
        )

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
            + (f", {_duration(self.time_s)}" if self.time_s else ""),
            f"  resources: {self.gpus_per_trial:g} GPU + {self.cpus_per_trial:g} CPU a trial on "
            f"{self.device}; "
            + ("as many at a time as the cluster's CPUs allow"
               if self.cpus_total is None and not self.gpus_per_trial else
               f"up to {self.concurrency} at a time ({self.gpus_total:g} GPU, "
               + (f"{self.cpus_total:g} CPU in all)" if self.cpus_total is not None else
                  "and as many as the cluster's CPUs allow)")),
            f"  checked: {s.check.n_configs} trial configs the space can draw, "
            f"{s.check.n_shapes} network shape(s) built"
            + (f"; the largest trial holds about {_gib(s.check)} in training"
               if s.check.largest else ""),
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


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit} ({seconds:.0f} s)"
    return f"{seconds:.0f} s"


def _gib(check: Any) -> str:
    return f"{check.largest.training_bytes(check.largest_slots) / 2**30:.2f} GiB"


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
    """Check every flag against the space, the machine, the stores and the storage; raise
    UserError before anything is started or written. A dry run asks no server or cluster
    whether it answers, so a cluster search can be planned from anywhere."""
    reachable = not dry_run
    name = check_name(name or space.name)
    check_counts(trials=trials, gpus=gpus, cpus=cpus)
    machine = check_resources(space, gpus=gpus, cpus=cpus, address=address, dry_run=dry_run)
    storage_path = check_storage(storage)
    previous = check_previous(
        storage_path / name, space.path.read_text(), resume=resume, trials=trials,
        mlflow_uri=mlflow_uri, optuna_storage=optuna_storage,
    )  # fmt: skip
    tracked = check_tracking(
        previous.mlflow_uri if previous else mlflow_uri,
        previous.experiment if previous else experiment,
        reachable=reachable,
    )
    study_url = check_study(
        previous.optuna_storage if previous else optuna_storage, name, storage_path / name,
        resume=resume, finished=bool(previous and previous.finished), reachable=reachable,
    )  # fmt: skip
    warm_path, warm_url = check_warm_start(
        warm_start, storage_path, space, resume=resume, reachable=reachable
    )
    base = {
        **(previous.base if previous else _trial_base(space)),
        "run.device": machine.device,
        "run.threads": max(1, int(machine.cpus_per_trial)),
    }
    notes = (
        *machine.notes,
        *check_memory(space, machine),
        *check_data_here(space, machine, dry_run=dry_run),
    )
    return SearchPlan(
        space=space, name=name, storage=storage_path, mlflow_uri=tracked.uri,
        experiment=tracked.experiment,
        trials=(previous.trials if previous else trials) or space.budget.trials,
        time_s=space.budget.time_s, gpus_total=machine.gpus_total,
        cpus_total=machine.cpus_total, gpus_per_trial=machine.gpus_per_trial,
        cpus_per_trial=machine.cpus_per_trial, concurrency=machine.concurrency,
        device=machine.device, address=machine.address, resume=resume,
        base=_checked_base(space, base), finished=bool(previous and previous.finished),
        warm_start=warm_path, verbose=verbose, simulated_gpus=machine.simulated,
        notes=notes, optuna_storage=study_url, warm_start_storage=warm_url,
    )  # fmt: skip


# ---- the checks, in the order make_plan runs them ----


def check_name(name: str) -> str:
    if not NAME_RULE.fullmatch(name):
        raise UserError(
            f"--name {name!r}: use {NAME_HELP} (it names a folder, the MLflow runs and the "
            "Optuna study), e.g. cutmix-1"
        )
    return name


def check_counts(*, trials: int | None, gpus: float | None, cpus: float | None) -> None:
    if trials is not None and trials < 1:
        raise UserError(f"--trials must be >= 1, got {trials}")
    for flag, value in (("--gpus", gpus), ("--cpus", cpus)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"{flag} must be a finite number >= 0, got {value}")


@dataclass(frozen=True)
class Machine:
    """Where the trials run and how many at once."""

    gpus_total: float
    cpus_total: float | None  # None: all the CPUs of the cluster joined with --address
    gpus_per_trial: float
    cpus_per_trial: float
    concurrency: int
    device: str  # cpu or cuda
    address: str | None
    simulated: bool
    notes: tuple[str, ...]


def check_resources(
    space: SearchSpace, *, gpus: float | None, cpus: float | None, address: str | None,
    dry_run: bool,
) -> Machine:  # fmt: skip
    """GPUs and CPUs for the whole search and per trial, on this machine or the cluster."""
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
    if cpus is None and address is None and cpus_per_trial > cpus_total:
        notes.append(
            f"`resources.cpus` asks {cpus_per_trial:g} CPUs a trial; this machine has "
            f"{cpus_total:g}, so each trial gets {cpus_total:g} (pass --cpus to plan for "
            "another machine)"
        )
        cpus_per_trial = cpus_total
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
    device = "cuda" if gpus_per_trial > 0 and not simulated else "cpu"
    concurrency = _concurrency(gpus_total, cpus_total, gpus_per_trial, cpus_per_trial)
    return Machine(gpus_total, cpus_total, gpus_per_trial, cpus_per_trial, concurrency,
                   device, address, simulated, tuple(notes))  # fmt: skip


def check_storage(storage: str | Path | None) -> Path:
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


@dataclass(frozen=True)
class Previous:
    """What a resumed search recorded when it started (its `search.json`)."""

    mlflow_uri: str
    experiment: str
    optuna_storage: str
    trials: int | None
    base: dict[str, Any]
    finished: bool


def check_previous(
    path: Path, space_text: str, *, resume: bool, trials: int | None, mlflow_uri: str | None,
    optuna_storage: str | None,
) -> Previous | None:  # fmt: skip
    """A resumed search's record, checked against the space and the flags; None for a new
    search, whose name must be free."""
    name = path.name
    if not resume:
        if path.exists():
            raise UserError(
                f"a search named {name!r} already exists in {path.parent}; pass --resume to "
                "continue it, or --name NEW to start another"
            )
        return None
    meta = read_meta(path)
    record.check_same_space(meta, name, space_text)
    if mlflow_uri and tracking.absolute_uri(mlflow_uri) != meta["mlflow_uri"]:
        raise UserError(
            f"search {name!r} logs to {meta['mlflow_uri']}; resume it with that "
            "--mlflow-uri (or without --mlflow-uri)"
        )
    budget = meta["budget"]["trials"]
    if trials is not None and trials != budget:
        raise UserError(
            f"search {name!r} keeps the budget it started with ({budget} trials); to run "
            f"{trials} trials, start a new search that learns from this one: "
            f"--name NEW --warm-start {name}"
        )
    recorded = meta.get("optuna_storage") or study_storage.default_url(path)
    if optuna_storage and study_storage.absolute_url(optuna_storage) != recorded:
        raise UserError(
            f"search {name!r} keeps its Optuna study in {recorded}; resume it with that "
            "--optuna-storage (or without --optuna-storage)"
        )
    return Previous(meta["mlflow_uri"], meta["experiment"], recorded, budget, meta["base"],
                    meta["status"] == "finished")  # fmt: skip


@dataclass(frozen=True)
class Tracking:
    uri: str  # absolute for a SQLite store
    experiment: str


def check_tracking(uri: str | None, experiment: str, *, reachable: bool) -> Tracking:
    """The MLflow store (a usable scheme, a SQLite file that is one or can be made, a server
    that answers) and the experiment's name (one that MLflow can hold and is not deleted)."""
    uri = tracking.absolute_uri(uri or tracking.default_tracking_uri())
    tracking.check_store(uri)
    if (
        not experiment.strip()
        or len(experiment) > MAX_EXPERIMENT_NAME
        or not all(c.isprintable() for c in experiment)
    ):
        raise UserError(
            f"--experiment {experiment!r}: an MLflow experiment name is 1 to "
            f"{MAX_EXPERIMENT_NAME} printable characters, not only spaces; e.g. "
            f"--experiment {tracking.EXPERIMENT}"
        )
    if reachable and not tracking.sqlite_path(uri):  # a server: answers, lets us write?
        tracking_auth.check_search(tracking.connect(uri), experiment)
    tracking.check_experiment(uri, experiment)
    return Tracking(uri, experiment)


def check_study(
    url: str | None, name: str, path: Path, *, resume: bool, finished: bool, reachable: bool
) -> str:
    """The Optuna storage's URL ("" for the default beside the trials), checked unless the
    search already finished."""
    if not url or finished:
        return url or ""
    url = study_storage.absolute_url(url)
    study_storage.check(url, name, exists=None if resume else False, reachable=reachable)
    return url


def check_warm_start(
    name: str | None, storage: Path, space: SearchSpace, *, resume: bool, reachable: bool
) -> tuple[Path | None, str | None]:
    """The earlier search's folder and the URL of its Optuna study (as its search.json
    records it; beside its trials for searches from before `--optuna-storage`), checked to
    optimise the same objectives in the same directions."""
    if name is None:
        return None, None
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
        directions = study_storage.directions(url, name) if reachable else None
    except study_storage.StudyStorageError as err:
        raise UserError(f"--warm-start {name}: {err}") from None
    wanted = ["MAXIMIZE" if o.mode == "max" else "MINIMIZE" for o in space.objectives]
    if directions is not None and directions != wanted:
        raise UserError(
            f"--warm-start {name}: that search optimised {len(directions)} objective(s) "
            f"({', '.join(d.lower() for d in directions)}), this space "
            f"{', '.join(f'{o.metric} ({o.mode})' for o in space.objectives)}; warm-start "
            "from a search with the same objectives"
        )
    return path, url


def check_data_here(space: SearchSpace, machine: Machine, *, dry_run: bool) -> tuple[str, ...]:
    """A data set the space's trials read that is not on this machine: refused when the
    trials would run here, a note when they run elsewhere (a cluster) or only a plan is made
    (a dry run for another machine)."""
    if not space.check.data_absent:
        return ()
    first = space.check.data_absent[0]
    if machine.address is None and not dry_run:
        raise UserError(f"{space.path}: every trial would fail: {first}")
    return (f"data not on this machine, so not read here: {first}",)


def check_memory(space: SearchSpace, machine: Machine) -> tuple[str, ...]:
    """Refuse a space whose largest trial cannot fit the memory its trials share here (this
    machine's RAM for CPU trials, the GPU's memory for GPU trials); a note where it cannot be
    told from here (a cluster, GPUs this machine lacks)."""
    import torch

    largest, slots = space.check.largest, space.check.largest_slots
    if largest is None or machine.address is not None:
        return ()
    if machine.device == "cuda":
        if not torch.cuda.is_available():
            return (
                f"the largest trial's {largest.training_bytes(slots) / 2**30:.2f} GiB "
                "were not checked against the GPUs' memory, which this machine lacks",
            )
        share = min(1.0, machine.gpus_per_trial)
        total = preflight.device_memory(torch.device("cuda", 0))
        available, where = total * share, f"{share:g} of a GPU's {total / 2**30:.1f} GiB"
    else:
        total = preflight.device_memory(torch.device("cpu"))
        available = total / machine.concurrency
        where = f"1/{machine.concurrency} of this machine's {total / 2**30:.1f} GiB"
    try:
        preflight.check_fits(largest, slots, available, f"its {where}")
    except ConfigError as err:
        raise UserError(
            f"{space.path}: the largest trial the space can draw: {err} (or run fewer trials "
            "at once: --cpus, resources.cpus)"
        ) from None
    return ()


def _trial_base(space: SearchSpace) -> dict[str, Any]:
    """The space's base overrides, with the data folder made absolute: Tune runs each trial
    in its own folder, where a relative `data.root` would download the data set again."""
    root = Path(space.base_values["data.root"]).expanduser()
    return {**space.overrides, "data.root": str(root.absolute())}


def _checked_base(space: SearchSpace, base: dict[str, Any]) -> dict[str, Any]:
    """`base` once it builds a valid config with the space's preset (a resumed search's
    recorded base may no longer, e.g. after a preset changed)."""
    try:
        ConfigBuilder.of(preset=space.preset).build(base)
    except ConfigError as err:
        raise UserError(
            f"the search's recorded base config no longer builds: {err}; start a new search"
        ) from None
    return base


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


def read_meta(path: Path) -> dict[str, Any]:
    """The search's own record (`search.json`, checked by `search.record`), as a dict."""
    return record.read(path).model_dump()
