"""Chaos soak: rounds of a real small search, each hit by one random fault, then resumed.

    python benchmarks/chaos.py --cluster --rounds 50 --seed 0
    python benchmarks/chaos.py --rounds 3 --faults sigkill-driver,kill-worker --json out.json

Each round starts a search of benchmarks/spaces/chaos.yaml (digits, 8 trials of 6 epochs,
asha at epochs 1, 2, 4), injects one fault drawn uniformly (seeded) at a random moment
(after a drawn number of trial events the driver printed, plus a jitter under a second),
then runs `--resume` until the search says it finished. Two modes:

    (default)   each driver starts its own local Ray on 127.0.0.1 (token authentication);
                one SQLite MLflow store shared by every round
    --cluster   every driver joins one loopback multi-node Ray (a head with no CPUs, two
                1-CPU worker nodes, token authentication) with --address, and logs over
                HTTP to one MLflow tracking server on PostgreSQL, both living for the whole
                soak as a real cluster would (benchmarks/chaos_cluster.py)

Faults:

    sigint-driver, sigterm-driver   the driver stops cleanly: exit 130, nothing left RUNNING
    sigkill-driver                  the driver dies at once (with its local Ray: a dead
                                    machine; on the cluster its trials must end with it)
    kill-worker                     SIGKILL of a trial worker process (`ray::ImplicitFunc`,
                                    running a trial or idle in Tune's cache for the next)
    kill-node        (--cluster)    SIGKILL of a worker node and its processes; a new node
                                    joins at once: the trial retried elsewhere, exit 0
    restart-mlflow   (--cluster)    SIGKILL or SIGTERM of the tracking server, started again
                                    on its port after 1-10 s: buffered writes, exit 0

After every round the search's MLflow runs, Optuna study, search.json, Tune's results and
scheduler.jsonl are checked (`check_search`):

    trial_count    MLflow trial runs = the study's trials = the budget; every other Optuna
                   trial is one a killed driver lost (failed, saying so)
    metric_points  each per-epoch metric of each trial run has steps exactly 1..E, each once,
                   E = the epochs Tune saw the trial complete
    running_run    no run (search or trial) RUNNING once the driver exited
    asha_rule      every decision is the rule over the rung's earlier records (tests/asha.py),
                   and a trial is pruned in MLflow exactly when asha stopped it below max_t
    failed_trial   no trial failed (the space has no failing trial; one kill is within
                   Tune's two retries)
    driver_exit    SIGINT/SIGTERM end with 130 (or die of the signal before the search
                   began: a signal during start-up), a killed worker or node and a
                   restarted server with 0 (or, the server down as the driver started, 2
                   saying it cannot reach the store); resumes with 0; no process of a
                   driver outlives it by 20 s, nor, on the cluster, a trial process

It prints a line per round and a JSON summary at the end. Not part of CI (it takes about a
minute a round); tests/benchmarks/test_chaos.py checks the invariant checker on hand-made
stores and processes, and the last results are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.asha import asha_rule  # noqa: E402  the rule the tests replay

if TYPE_CHECKING:
    from benchmarks.chaos_cluster import Loopback

SPACE = ROOT / "benchmarks" / "spaces" / "chaos.yaml"
FAULTS = ("sigint-driver", "sigterm-driver", "sigkill-driver", "kill-worker")
CLUSTER_FAULTS = ("kill-node", "restart-mlflow")  # need --cluster (benchmarks/chaos_cluster.py)
SIGNALS = {"sigint-driver": signal.SIGINT, "sigterm-driver": signal.SIGTERM,
           "sigkill-driver": signal.SIGKILL}  # fmt: skip
MAX_MOMENT = 24  # trial events before the fault: a whole search prints about 28
RUN_TIMEOUT_S = 900  # one driver, start to exit, on two busy cores
LEAVE_S = 20  # a driver's processes must be gone this long after it exits
RESUMES = 3  # resumes a round may need before the search must have finished
EVENT_LINE = re.compile(r"^\[[0-9:]+\] trial \S+ ", re.MULTILINE)  # started, epoch, ended
PER_EPOCH_EXCLUDED = ("final/", "best_epoch")  # logged once, at the kept epoch


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str


@dataclass
class Round:
    number: int
    search: str
    fault: str
    moment: int  # trial events the driver printed before the fault
    outcome: str = ""
    resumes: int = 0
    violations: list[Violation] = field(default_factory=list)
    seconds: float = 0.0


# ---- invariants --------------------------------------------------------------------------


def check_search(folder: Path, *, finished: bool) -> list[Violation]:
    """Every invariant of the search kept in `folder` (see the module's docstring);
    `finished`: the search must have run its whole budget."""
    from mixmo_search import tracking

    meta = json.loads((folder / "search.json").read_text())
    client = tracking.connect(meta["mlflow_uri"], create=False)
    exp_id = tracking.experiment_id(client, meta["experiment"], create=False)
    runs = tracking.trial_run_records(client, exp_id, meta["parent_run_id"])
    tune_epochs = completed_epochs(folder)
    found = running_runs(client, meta["parent_run_id"], runs)
    found += trial_counts(client, exp_id, runs, meta, folder.name, finished=finished)
    found += metric_points(client, runs, tune_epochs)
    found += asha_decisions(folder, meta, runs)
    found += failed_trials(runs)
    return found


def completed_epochs(folder: Path) -> dict[str, int]:
    """{trial id: the last epoch Tune recorded it completing} from the trials' result.json."""
    epochs: dict[str, int] = {}
    for file in folder.glob("*/result.json"):
        for line in file.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if "epoch" in row:
                epochs[row["trial_id"]] = max(epochs.get(row["trial_id"], 0), int(row["epoch"]))
    return epochs


def running_runs(client, parent_id: str, runs: list) -> list[Violation]:
    left = [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    if client.get_run(parent_id).info.status == "RUNNING":
        left.append(f"{parent_id} (the search's run)")
    return [Violation("running_run", f"run {run} RUNNING after its driver exited") for run in left]


def trial_counts(
    client, exp_id: str, runs: list, meta: dict, name: str, *, finished: bool
) -> list[Violation]:
    """MLflow trial runs, their Optuna trials (the study `name`) and the budget agree; other
    Optuna trials were lost by a killed driver (FAIL with `mixmo.lost`, or kept as told:
    their runs deleted)."""
    import optuna

    from mixmo_search import tracking
    from mixmo_search.search.lost_trials import LOST

    found: list[Violation] = []
    numbers = [r.data.tags.get(tracking.OPTUNA_TRIAL) for r in runs]
    if len(set(numbers)) != len(numbers) or None in numbers:
        found.append(Violation("trial_count", f"runs' Optuna trial numbers {sorted(numbers)}"))
    study = optuna.load_study(study_name=name, storage=meta["optuna_storage"])
    ours = {int(n) for n in numbers if n is not None and n.isdigit()}
    trials = {t.number: t for t in study.trials}
    if missing := ours - set(trials):
        found.append(Violation("trial_count", f"runs name Optuna trials {sorted(missing)}"))
    deleted = _deleted_trial_numbers(client, exp_id, meta["parent_run_id"])
    for number, trial in trials.items():
        lost = LOST in trial.user_attrs or number in deleted
        if number not in ours and not lost:
            found.append(Violation("trial_count", f"Optuna trial {number} has no MLflow run "
                                   f"and is not marked lost ({trial.state.name})"))  # fmt: skip
        if finished and number in ours and trial.state.name in ("RUNNING", "WAITING"):
            found.append(
                Violation("trial_count", f"Optuna trial {number} still {trial.state.name}")
            )
    budget = meta["budget"]["trials"]
    if finished and len(runs) != budget:
        found.append(Violation("trial_count", f"{len(runs)} trial runs for a budget of {budget}"))
    return found


def _deleted_trial_numbers(client, exp_id: str, parent_id: str) -> set[int]:
    from mlflow.entities import ViewType

    from mixmo_search import tracking

    query = f"tags.`{tracking.PARENT}` = '{parent_id}'"
    runs = client.search_runs([exp_id], query, run_view_type=ViewType.DELETED_ONLY)
    return {int(n) for r in runs if (n := r.data.tags.get(tracking.OPTUNA_TRIAL, "")).isdigit()}


def failed_trials(runs: list) -> list[Violation]:
    """The soak's space has no failing trial and one fault is within Tune's two retries."""
    from mixmo_search import tracking

    return [Violation("failed_trial", f"trial {r.data.tags[tracking.TRIAL_ID]} failed: "
                      f"{r.data.tags.get(tracking.ERROR, '')[:160]}")
            for r in runs if r.data.tags.get(tracking.STATUS) == "failed"]  # fmt: skip


def metric_points(client, runs: list, tune_epochs: dict[str, int]) -> list[Violation]:
    """Each per-epoch metric of each trial run: steps exactly 1..E, each once."""
    from mixmo_search import tracking

    found: list[Violation] = []
    for run in runs:
        trial_id = run.data.tags[tracking.TRIAL_ID]
        keys = [k for k in run.data.metrics if not k.startswith(PER_EPOCH_EXCLUDED)]
        steps = {k: [m.step for m in client.get_metric_history(run.info.run_id, k)] for k in keys}
        epochs = tune_epochs.get(trial_id, max((max(s) for s in steps.values() if s), default=0))
        found += point_violations(trial_id, steps, epochs)
    return found


def point_violations(trial_id: str, steps: dict[str, list[int]], epochs: int) -> list[Violation]:
    """Duplicated or missing points of a trial's per-epoch metrics (`steps`: every step
    logged, per key), against epochs 1..`epochs`."""
    found = []
    expected = set(range(1, epochs + 1))
    for key, logged in sorted(steps.items()):
        twice = sorted(s for s, n in collections.Counter(logged).items() if n > 1)
        lost, extra = sorted(expected - set(logged)), sorted(set(logged) - expected)
        for what, which in (("duplicated", twice), ("lost", lost), ("beyond the epochs", extra)):
            if which:
                detail = f"trial {trial_id} {key}: steps {which} {what} (epochs 1..{epochs})"
                found.append(Violation("metric_points", detail))
    return found


def asha_decisions(folder: Path, meta: dict, runs: list) -> list[Violation]:
    """The record replays by the rule, and MLflow's pruned trials are asha's stops."""
    from mixmo_search import tracking

    space = meta["space_document"]
    options, max_t = space["scheduler"], int(meta["base"]["optim.epochs"])
    mode = space["objective"][0]["mode"]
    file = folder / "scheduler.jsonl"
    lines = file.read_text().splitlines() if file.is_file() else []
    decisions = [json.loads(line) for line in lines if line.strip()]
    found = []
    try:
        asha_rule(decisions, reduction_factor=options["reduction_factor"], mode=mode, max_t=max_t)
    except AssertionError as err:
        found.append(Violation("asha_rule", f"decision against the rule: {err}"))
    stopped = {d["trial_id"] for d in decisions if d["stop"] and d["rung"] < max_t}
    for run in runs:
        trial_id, status = run.data.tags[tracking.TRIAL_ID], run.data.tags.get(tracking.STATUS)
        if (status == "pruned") != (trial_id in stopped):
            said = "stopped" if trial_id in stopped else "not stopped"
            found.append(Violation("asha_rule", f"trial {trial_id} is {status}, asha {said} it"))
    return found


# ---- faults and drivers ------------------------------------------------------------------


class Search:
    """One search of the soak: its name, store and the commands that drive it, on a local
    Ray of its own or, with `cluster`, joining the soak's loopback cluster."""

    def __init__(self, root: Path, name: str, uri: str, cluster: Loopback | None = None) -> None:
        self.root, self.name, self.uri, self.cluster = root, name, uri, cluster
        self.folder = root / "runs" / "searches" / name
        # its local Ray's files (short: socket paths are limited); the cluster has its own
        self.ray_tmp = None if cluster else Path(tempfile.mkdtemp(prefix="mxc-", dir="/tmp"))

    def args(self, *, resume: bool) -> list[str]:
        ray = ["--address", self.cluster.ray.address] if self.cluster else ["--cpus", "2"]
        return [sys.executable, "-m", "mixmo_search.tune", "--space", str(SPACE), "--gpus",
                "0", *ray, "--mlflow-uri", self.uri, "--name", self.name,
                *(["--resume"] if resume else [])]  # fmt: skip

    def trial_session(self, driver: subprocess.Popen) -> int:
        """The process session its trial workers run in: the driver's, or the cluster's."""
        return self.cluster.ray.proc.pid if self.cluster else driver.pid

    def trials_left(self) -> list[str]:
        """After a driver exited: its trials still on the cluster (`trials_left`)."""
        return trials_left(self.cluster.ray.proc.pid) if self.cluster else []

    def start(self, *, resume: bool, log: Path) -> subprocess.Popen:
        if self.cluster:
            env = self.cluster.driver_env()  # unbuffered, this checkout on PYTHONPATH
        else:
            path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": str(self.ray_tmp),
                   "PYTHONPATH": path}  # fmt: skip
        with log.open("a") as out:
            return subprocess.Popen(
                self.args(resume=resume), cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )  # fmt: skip

    def status(self) -> str:
        file = self.folder / "search.json"
        try:
            return json.loads(file.read_text()).get("status", "")
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        if self.ray_tmp:
            shutil.rmtree(self.ray_tmp, ignore_errors=True)


def end_session(sid: int, grace_s: float = 0) -> list[str]:
    """SIGKILL what is left of a driver's process session after `grace_s` seconds (Ray's
    workers exit a moment after their driver); the names of what was left."""
    import psutil

    def left() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["name"]):
            try:
                if proc.pid != sid and os.getsid(proc.pid) == sid and proc.status() != "zombie":
                    found.append(proc)
            except (OSError, psutil.Error):
                continue
        return found

    deadline = time.monotonic() + grace_s
    while (procs := left()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            continue
    return [proc.info["name"] for proc in procs]


def trials_left(session: int, grace_s: float = LEAVE_S) -> list[str]:
    """Trial processes of process session `session` still alive `grace_s` seconds from now,
    then killed: on the cluster, which outlives its drivers, Ray must end a job's trial
    workers once its driver is gone, however it went."""
    deadline = time.monotonic() + grace_s
    while (alive := trial_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return [f"ray::ImplicitFunc {pid} on the cluster" for pid in alive]


def event_lines(log: Path, offset: int) -> int:
    """Trial events (started, an epoch at a rung, ended) the driver printed to `log` past
    `offset`: they come as each event happens (Tune writes result.json in batches)."""
    with log.open("rb") as file:
        file.seek(offset)
        return len(EVENT_LINE.findall(file.read().decode(errors="replace")))


def wait_for_moment(driver: subprocess.Popen, log: Path, offset: int, moment: int) -> bool:
    """Until the driver printed `moment` trial events; False if it exited first."""
    while event_lines(log, offset) < moment:
        if driver.poll() is not None:
            return False
        time.sleep(0.1)
    return driver.poll() is None


def trial_processes(session: int) -> list[int]:
    """Pids of the trial worker processes (`ray::ImplicitFunc`) in process session `session`:
    a local search's driver's, or the loopback cluster's."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            named = " ".join([proc.info["name"] or "", *(proc.info["cmdline"] or [])])
            if "ImplicitFunc" in named and os.getsid(proc.pid) == session:
                found.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return sorted(found)


def trial_worker(search: Search, driver: subprocess.Popen, rng: random.Random) -> int | None:
    """The pid of a live trial worker (`ray::ImplicitFunc`) of this driver, once there is one."""
    while driver.poll() is None:
        if alive := trial_processes(search.trial_session(driver)):
            return rng.choice(alive)
        time.sleep(0.1)
    return None


def inject(fault: str, search: Search, driver: subprocess.Popen, rng: random.Random) -> str:
    """Inject `fault` into the running `driver` (or its cluster); what was done."""
    if fault in SIGNALS:
        driver.send_signal(SIGNALS[fault])
        return f"{SIGNALS[fault].name} to the driver"
    if fault == "kill-node":
        before = len(trial_processes(search.trial_session(driver)))
        done = search.cluster.kill_node(rng)
        after = len(trial_processes(search.trial_session(driver)))
        return f"{done} (trial processes in the cluster: {before} before, {after} after)"
    if fault == "restart-mlflow":
        return search.cluster.restart_mlflow(rng)
    pid = trial_worker(search, driver, rng)
    if pid is None:
        return "no live trial worker to kill: the search ended first"
    os.kill(pid, signal.SIGKILL)
    return f"SIGKILL to trial worker {pid}"


def expected_exit(fault: str, returncode: int, search: Search, said: str = "") -> bool:
    """The driver's exit status as the fault should leave it (`said`: its output)."""
    if search.status() == "finished" and returncode == 0:  # the fault came as it ended
        return True
    if fault == "restart-mlflow" and returncode == 2:  # down while the driver started: refused
        return "cannot reach the MLflow store" in said  # before anything ran (one clear line)
    if fault == "sigkill-driver":
        return returncode == -signal.SIGKILL
    if fault in SIGNALS and returncode == -SIGNALS[fault]:  # the signal's default action:
        return not search.folder.joinpath("search.json").exists()  # only before it began
    return returncode == (130 if fault in SIGNALS else 0)


def play_round(number: int, search: Search, rng: random.Random, faults: list[str]) -> Round:
    fault, moment = rng.choice(faults), rng.randint(0, MAX_MOMENT)
    this = Round(number, search.name, fault, moment)
    log = search.root / f"round-{number:03d}.log"
    log.touch()
    started, offset = time.monotonic(), log.stat().st_size
    driver = search.start(resume=search.folder.joinpath("search.json").is_file(), log=log)
    try:
        if wait_for_moment(driver, log, offset, moment):
            time.sleep(rng.uniform(0, 1))
            this.outcome = inject(fault, search, driver, rng)
        else:
            this.outcome = "the search ended before the moment"
        driver.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        left = end_session(driver.pid, 0 if fault == "sigkill-driver" else LEAVE_S)
    if fault == "sigkill-driver":
        left = []  # a dead machine: its local Ray dies with it (a cluster's is checked below)
    left += search.trials_left()
    if left:
        this.violations.append(Violation("driver_exit", f"processes left behind: {left}"))
    said = log.read_bytes()[offset:].decode(errors="replace")
    if not expected_exit(fault, driver.returncode, search, said):
        this.violations.append(Violation("driver_exit", f"{fault}: the driver exited "
                                         f"{driver.returncode}; see {log}"))  # fmt: skip
    if fault != "sigkill-driver" and search.folder.joinpath("search.json").is_file():
        found = check_search(search.folder, finished=False)
        this.violations += [v for v in found if v.kind == "running_run"]
    this.outcome += f", exit {driver.returncode}"
    resume_until_finished(search, this, log)
    if search.folder.joinpath("search.json").is_file():
        this.violations += check_search(search.folder, finished=search.status() == "finished")
    this.seconds = time.monotonic() - started
    return this


def resume_until_finished(search: Search, this: Round, log: Path) -> None:
    while search.status() != "finished" and this.resumes < RESUMES:
        this.resumes += 1
        driver = search.start(resume=search.folder.joinpath("search.json").is_file(), log=log)
        try:
            driver.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()
        left = end_session(driver.pid, LEAVE_S) + search.trials_left()
        if driver.returncode != 0 or left:
            said = f"resume {this.resumes} exited {driver.returncode}, left {left}; see {log}"
            this.violations.append(Violation("driver_exit", said))
    if search.status() != "finished":
        this.violations.append(Violation("driver_exit", f"unfinished after {RESUMES} resumes"))


# ---- the soak ----------------------------------------------------------------------------


def soak(
    rounds: int, seed: int, faults: list[str], root: Path, out: Path | None, *, cluster: bool
) -> dict:
    if not cluster:
        return play_rounds(rounds, seed, faults, root, out, None)
    from benchmarks.chaos_cluster import loopback

    with loopback(root) as on:
        return play_rounds(rounds, seed, faults, root, out, on)


def play_rounds(
    rounds: int, seed: int, faults: list[str], root: Path, out: Path | None,
    cluster: Loopback | None,
) -> dict:  # fmt: skip
    rng = random.Random(seed)
    uri = cluster.uri if cluster else f"sqlite:///{root / 'mlflow.db'}"
    played: list[Round] = []
    started = time.monotonic()
    for number in range(1, rounds + 1):
        search = Search(root, f"chaos-{seed}-{number:03d}", uri, cluster)
        try:
            this = play_round(number, search, rng, faults)
        finally:
            search.close()
        played.append(this)
        kinds = collections.Counter(v.kind for v in this.violations)
        print(f"round {number:3d}/{rounds}  {this.fault:15s} moment {this.moment:2d}  "
              f"{this.seconds:5.0f} s  resumes {this.resumes}  {this.outcome}  "
              f"violations {dict(kinds) or 0}", flush=True)  # fmt: skip
        for v in this.violations:
            print(f"    {v.kind}: {v.detail}", flush=True)
        if out is not None:  # so far: a soak cut short keeps its figures
            out.write_text(json.dumps(summary(played, seed, time.monotonic() - started, root,
                                              cluster), indent=2) + "\n")  # fmt: skip
    return summary(played, seed, time.monotonic() - started, root, cluster)


def summary(
    played: list[Round], seed: int, seconds: float, root: Path, cluster: Loopback | None
) -> dict:
    import torch

    violations = collections.Counter(v.kind for r in played for v in r.violations)
    mode = ("loopback cluster: Ray head (0 CPUs) + 2 worker nodes of 1 CPU, MLflow server on "
            "PostgreSQL" if cluster else "local Ray, SQLite MLflow store")  # fmt: skip
    return {
        "mode": mode,
        "rounds": len(played),
        "seed": seed,
        "faults": dict(collections.Counter(r.fault for r in played)),
        "faults_landed": dict(collections.Counter(
            r.fault for r in played if not r.outcome.startswith(("the search ended", "no live")))),
        "violations": dict(violations),
        "violation_details": [{"round": r.number, "fault": r.fault, "kind": v.kind,
                               "detail": v.detail} for r in played for v in r.violations],
        "wall_s": round(seconds, 1),
        "mean_round_s": round(seconds / max(len(played), 1), 1),
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "workdir": str(root),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="join a loopback multi-node Ray and log to an MLflow server",
    )
    parser.add_argument(
        "--faults",
        help="comma-separated, from: "
        f"{', '.join(FAULTS + CLUSTER_FAULTS)} (default: all that apply)",
    )
    parser.add_argument("--workdir", type=Path, help="where the searches go (default: temp)")
    parser.add_argument("--json", type=Path, help="also write the summary here, each round")
    args = parser.parse_args(argv)
    known = FAULTS + CLUSTER_FAULTS if args.cluster else FAULTS
    faults = [f for f in (args.faults or ",".join(known)).split(",") if f]
    if unknown := sorted(set(faults) - set(known)):
        fix = " (with --cluster)" if set(unknown) <= set(CLUSTER_FAULTS) else ""
        parser.error(f"unknown faults {unknown}{fix}; known: {', '.join(known)}")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="mixmo-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    result = soak(args.rounds, args.seed, faults, root.resolve(), args.json, cluster=args.cluster)
    print(json.dumps(result, indent=2))
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
