"""A Ray Tune callback that mirrors every trial into a nested MLflow run, from the driver.

Writing from the driver keeps one writer per store (no SQLite lock fights between trial
processes) and works on a cluster where only the driver reaches the tracking server. The
writes go through a `TrackingQueue`, so a tracking server that is down for a while delays
them instead of failing the search. Each epoch is logged once per run: an epoch a trial
reports again (after a retry from an earlier checkpoint, or a resumed search) is skipped.
The Ray nodes a trial trained on are its run's `mixmo.nodes` tag, in order.

A driver that dies can leave MLflow behind Tune's saved record of the search (updates still
queued). A resumed search catches up first, and again at its end: every epoch each trial
reported (its `result.json` in the search's storage) that MLflow lacks, and the outcome of
trials Tune ended.

How a trial ended is `outcomes.classify`'s to say: its `mixmo.status` tag is the outcome, and
its run is FINISHED, FAILED (with `mixmo.error`) or KILLED; only a pruned trial's run is
renamed `<trial> (pruned at epoch E)`. A trial the search stopped (interrupted, out of time)
is not ended here: the search does it once it knows how it stopped (`run`).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from mixmo_search import tracking
from mixmo_search.config import coerce_value
from mixmo_search.errors import ConfigError
from mixmo_search.search import outcomes, placement
from mixmo_search.search.optuna_search import OPTUNA_TRIAL
from mixmo_search.search.outcomes import Ending, Outcome
from mixmo_search.search.scheduler import RECORD, RungRecord
from mixmo_search.search.tracking_queue import TrackingQueue
from mixmo_search.search.trainable import NODE_ID, TRIAL_CONFIG

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from ray.tune.experiment import Trial

    from mixmo_search.search.plan import SearchPlan

# Tune's own bookkeeping keys: not worth an MLflow metric each
_SKIP = {"timestamp", "time_this_iter_s", "time_total_s", "pid", "training_iteration",
         "time_since_restore", "iterations_since_restore", "done", "epoch"}  # fmt: skip
NODES = "mixmo.nodes"  # tag: the Ray node ids a trial trained on, comma-separated, in order
LOGGED_WITH_CONFIG = "run.out_dir"  # a param only the trained config logs (never searched)
EVERY_EPOCH = "train/loss"  # a metric every epoch reports: its last step is the last epoch
ENDED = {Outcome.FINISHED, Outcome.PRUNED, Outcome.FAILED}  # outcomes a trial reaches itself


class RunRef:
    """A trial's MLflow run, whose id the queue fills in when it creates (or finds) it."""

    def __init__(self, run_id: str | None = None) -> None:
        self.id = run_id


class MlflowTrials(Callback):
    """Creates, updates and closes one child run per trial under the search's parent run.

    It holds the tracking URI, not a client, because Tune pickles its callbacks with the
    experiment; `setup` connects and reattaches to the runs of a resumed search.
    """

    def __init__(self, uri: str, exp_id: str, parent_id: str, plan: SearchPlan) -> None:
        self.uri, self.exp_id, self.parent_id = uri, exp_id, parent_id
        self.search = plan.name
        self.objectives = [o.metric for o in plan.space.objectives]
        self.rungs = plan.path / RECORD  # the scheduler's decisions
        self.queue: TrackingQueue | None = None
        self.runs: dict[str, RunRef] = {}
        self.last_epoch: dict[str, int] = {}  # trial id -> last epoch queued for MLflow
        self.nodes: dict[str, list[str]] = {}  # trial id -> the nodes it trained on
        self.status: dict[str, str] = {}  # trial id -> its run's last queued status
        self.configured: set[str] = set()  # trial ids whose trained config is logged
        self.caught_up = False

    def setup(self, **info: Any) -> None:
        client = tracking.connect(self.uri)
        self.queue = TrackingQueue(client, uri=self.uri)
        for run in tracking.trial_run_records(client, self.exp_id, self.parent_id):
            trial_id = run.data.tags[tracking.TRIAL_ID]
            self.runs[trial_id] = RunRef(run.info.run_id)
            history = client.get_metric_history(run.info.run_id, EVERY_EPOCH)
            self.last_epoch[trial_id] = max((m.step for m in history), default=0)
            self.nodes[trial_id] = [n for n in run.data.tags.get(NODES, "").split(",") if n]
            self.status[trial_id] = run.data.tags.get(tracking.STATUS, "")
            if LOGGED_WITH_CONFIG in run.data.params:
                self.configured.add(trial_id)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "queue": None, "runs": {}, "last_epoch": {}, "nodes": {},
                "status": {}, "configured": set(), "caught_up": False}  # fmt: skip

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self.caught_up:
            self.caught_up = True
            for trial in trials:
                self._catch_up(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial in trials:  # Tune ends a search it restored finished without a step
            self._catch_up(trial)

    def _catch_up(self, trial: Trial) -> None:
        """Queue what MLflow lacks of Tune's record of `trial` (see the module docstring)."""
        results = _saved_results(trial)
        recorded = [node for node, _ in itertools.groupby(r.get(NODE_ID) for r in results) if node]
        known = self.nodes.get(trial.trial_id, [])
        if len(recorded) > len(known) and recorded[: len(known)] == known:  # nodes it lacks
            self._set_nodes(trial, recorded)
        for result in results:
            self._log_config(trial, result)
            self._log_epoch(trial, result)
        if self.status.get(trial.trial_id) not in ENDED:
            if trial.status == "TERMINATED":
                self.on_trial_complete(0, [], trial)
            elif trial.status == "ERROR":
                self.on_trial_error(0, [], trial)

    def _run(self, trial: Trial) -> RunRef:
        ref = self.runs.get(trial.trial_id)
        if ref is None:
            ref = self.runs[trial.trial_id] = RunRef()
            sampled = _sampled(trial.config)
            # what the sampler drew, as the config holds it; the whole config as trained
            # comes with the trial's first report (`_log_config`)
            params = {k: _as_field(k, v) for k, v in sampled.items()}
            number = trial.config.get(OPTUNA_TRIAL)
            trial_id, tags = trial.trial_id, {}
            if number is not None:
                tags[tracking.OPTUNA_TRIAL] = str(number)

            def create(client: MlflowClient) -> None:
                # found first: a retry after the store created it but its answer was lost
                ref.id = tracking.find_trial_run(
                    client, self.exp_id, self.parent_id, trial_id
                ) or tracking.start_trial_run(
                    client, self.exp_id, self.parent_id, search=self.search,
                    trial_id=trial_id, params={}, tags=tags,
                )  # fmt: skip
                tracking.log_params(client, ref.id, {**params, "searched": sorted(sampled)})

            self.queue.submit(f"run of trial {trial_id}", create)
        return ref

    def _status(self, trial: Trial, status: str, **kwargs: Any) -> None:
        ref = self._run(trial)
        self.status[trial.trial_id] = status
        self.queue.submit(
            f"status of trial {trial.trial_id}",
            lambda client: tracking.set_status(client, ref.id, status, **kwargs),
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self._status(trial, "running")

    def on_trial_restore(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self._status(trial, "running")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Trial, result: dict, **info
    ) -> None:
        node = result.get(NODE_ID)
        nodes = self.nodes.get(trial.trial_id, [])
        if node and (not nodes or nodes[-1] != node):
            self._set_nodes(trial, [*nodes, node])
        if result.get("iterations_since_restore") == 1:  # where it trains: at each (re)start
            ref, tags = self._run(trial), placement.mlflow_tags(result)

            def tag_placement(client: MlflowClient) -> None:
                for key, value in tags.items():
                    client.set_tag(ref.id, key, value)

            self.queue.submit(f"placement of trial {trial.trial_id}", tag_placement)
        self._log_config(trial, result)
        self._log_epoch(trial, result)

    def _log_config(self, trial: Trial, result: dict) -> None:
        """The trial's whole config as the trainable built and trained it: its params."""
        config = result.get(TRIAL_CONFIG)
        if not isinstance(config, dict) or trial.trial_id in self.configured:
            return
        self.configured.add(trial.trial_id)
        ref = self._run(trial)
        self.queue.submit(
            f"config of trial {trial.trial_id}",
            lambda client: tracking.log_params(client, ref.id, config),
        )

    def _set_nodes(self, trial: Trial, nodes: list[str]) -> None:
        ref, value = self._run(trial), ",".join(nodes)
        self.nodes[trial.trial_id] = nodes
        self.queue.submit(
            f"nodes of trial {trial.trial_id}",
            lambda client: client.set_tag(ref.id, NODES, value),
        )

    def _log_epoch(self, trial: Trial, result: dict) -> None:
        ref, trial_id, epoch = self._run(trial), trial.trial_id, int(result["epoch"])
        if outcomes.FAILED in result or epoch <= self.last_epoch.get(trial_id, 0):
            return  # a failure's reason (no metrics), or logged before this trial's retry
        self.last_epoch[trial_id] = epoch
        metrics = {k: v for k, v in result.items() if k not in _SKIP}
        batch = tracking.metric_batch(metrics, step=epoch)  # timestamped now, once
        self.queue.submit(
            f"epoch {epoch} of trial {trial_id}",
            lambda client: tracking.log_metric_batch(client, ref.id, batch),
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        pruned_at = RungRecord.load(self.rungs).stopped_at(trial.trial_id)
        ending = outcomes.classify(trial.last_result, objectives=self.objectives,
                                   pruned_at=pruned_at)  # fmt: skip
        if ending is not None:  # else the search stopped it: see the module docstring
            self.end(trial, ending)

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        error = outcomes.error_reason(trial)
        self.end(trial, outcomes.classify(trial.last_result, objectives=self.objectives,
                                          error=error))  # fmt: skip

    def end(self, trial: Trial, ending: Ending) -> None:
        """Record how `trial` ended: its status tag, run status, name and artifacts."""
        ref = self._run(trial)
        checkpoint = trial.checkpoint
        if ending.outcome is Outcome.FINISHED and checkpoint is not None:

            def upload(client: MlflowClient) -> None:
                with checkpoint.as_directory() as folder:
                    _log_artifacts(client, ref.id, Path(folder))

            self.queue.submit(f"artifacts of trial {trial.trial_id}", upload)
        name = ending.run_name(trial.trial_id)
        if name != trial.trial_id:
            self.queue.submit(
                f"name of trial {trial.trial_id}",
                lambda client: client.update_run(ref.id, name=name),
            )
        self._status(trial, ending.outcome.value, reason=ending.reason or None)


def _saved_results(trial: Trial) -> list[dict[str, Any]]:
    """Every result of `trial` in its `result.json` in the search's storage (a line cut
    short by a dying driver is left out)."""
    file = Path(trial.path or "") / "result.json"
    if not trial.path or not file.is_file():
        return []
    results = []
    for line in file.read_text().splitlines():
        try:
            results.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in results if "epoch" in r]


def _log_artifacts(client: MlflowClient, run_id: str, folder: Path) -> None:
    predictions = folder / "predictions"
    if predictions.is_dir():
        client.log_artifacts(run_id, str(predictions), "predictions")
    if (folder / "best.pt").exists():
        client.log_artifact(run_id, str(folder / "best.pt"), "checkpoint")


def _sampled(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if "." in k}


def _as_field(key: str, value: Any) -> Any:
    """`value` as the config's field holds it (2 for a float is 2.0: the trained config's
    param will read the same), or as drawn when the field refuses it (the trial fails)."""
    try:
        return coerce_value(key, value)
    except ConfigError:
        return value
