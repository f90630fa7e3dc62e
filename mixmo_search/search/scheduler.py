"""Trial schedulers by name (`make_scheduler`, beside `samplers.make_sampler`), and an asha
that keeps its decisions when a search is interrupted.

Ray's `ASHAScheduler` keeps its rung records in memory, and `Tuner.restore` rebuilds it empty
(ray-project/ray#30838): a resumed search lets through the first trial to reach each rung and
judges the next ones against the post-resume trials alone. `Asha` applies Ray's rule (one
bracket, rungs at grace_period x reduction_factor^k below max_t; a trial reaching a rung stops
when its guard value is below the (1 - 1/reduction_factor) quantile of the values recorded at
that rung before it; a trial reaching max_t stops) and appends each decision, in order, to
`scheduler.jsonl` in the search's folder before Tune acts on it. A resumed search reads them
back, so it decides as the uninterrupted search would have. (Not a `.json` file: restoring a
search, Tune copies the `.json` and `.pkl` files of its folder aside and uploads those copies
back over the originals as it runs.) Progress is counted in completed
epochs (the result's `epoch`), which a trial restored from an earlier checkpoint repeats; a
decision once recorded stands (a stop that a dead driver never carried out is made again,
when the trial, restored from an earlier checkpoint, reaches that epoch again).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from mixmo_search.search import outcomes

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from mixmo_search.search.types import Objective, SchedulerSpec

RECORD = "scheduler.jsonl"  # in the search's folder: every rung decision, one a line, in order


@dataclass(frozen=True)
class Decision:
    """One trial judged at one rung."""

    rung: float  # the milestone (epochs) it was judged at
    trial_id: str
    epoch: int  # the epoch it reported when judged (the rung's, unless a result was lost)
    value: float  # its guard metric then
    cutoff: float | None  # the quantile of the rung's earlier values (None: it was the first)
    stop: bool


class RungRecord:
    """The decisions of a search's asha, in the order they were made, kept in `path`."""

    def __init__(self, path: Path, decisions: list[Decision] | None = None) -> None:
        self.path, self.decisions = path, decisions or []

    @classmethod
    def load(cls, path: Path) -> RungRecord:
        """The record in `path` (empty when the search has none: fifo, or not judged yet)."""
        if not path.is_file():
            return cls(path)
        decisions = []
        for line in path.read_text().splitlines():
            try:
                decisions.append(Decision(**json.loads(line)))
            except (ValueError, TypeError):  # the last line, cut short by a killed driver
                continue
        return cls(path, decisions)

    def add(self, decision: Decision) -> None:
        """Append `decision`, on disk before it returns (Tune acts on it next)."""
        self.decisions.append(decision)
        with self.path.open("a") as file:
            file.write(json.dumps(asdict(decision)) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def judged(self, rung: float, trial_id: str) -> bool:
        return any(d.rung == rung and d.trial_id == trial_id for d in self.decisions)

    def values(self, rung: float) -> list[float]:
        return [d.value for d in self.decisions if d.rung == rung]

    def stopped_at(self, trial_id: str) -> int | None:
        """The epoch at which the scheduler stopped `trial_id` (None: it did not)."""
        return next((d.epoch for d in self.decisions if d.trial_id == trial_id and d.stop), None)


def rung_milestones(grace_period: int, reduction_factor: float, max_t: int) -> list[float]:
    """Ray's asha rungs below max_t: grace_period x reduction_factor^k, ascending."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    milestones = [grace_period * reduction_factor**k for k in range(count)]
    return [m for m in milestones if m < max_t]


class Asha(FIFOScheduler):
    """Ray's asynchronous successive halving, its decisions kept in a `RungRecord`.

    The guard metric stays out of Tune's `metric`: a failed trial's last result carries only
    its reason (`outcomes.FAILED`), which Tune's strict metric check would refuse.
    """

    def __init__(
        self, *, guard: str, mode: str, grace_period: int, reduction_factor: float, max_t: int,
        record: Path,
    ) -> None:  # fmt: skip
        super().__init__()
        self.guard, self.sign = guard, 1.0 if mode == "max" else -1.0
        self.milestones = rung_milestones(grace_period, reduction_factor, max_t)
        self.quantile = (1 - 1 / reduction_factor) * 100
        self.max_t, self.record_path = max_t, record
        self._record: RungRecord | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the scheduler once, when the search starts: a restored one reads its
        # decisions from the file
        return {**self.__dict__, "_record": None}

    @property
    def record(self) -> RungRecord:
        if self._record is None:
            self._record = RungRecord.load(self.record_path)
        return self._record

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        return self.decide(trial.trial_id, result)

    def decide(self, trial_id: str, result: dict[str, Any]) -> str:
        """CONTINUE or STOP for `trial_id`'s `result`, recorded before it is returned."""
        if outcomes.FAILED in result or outcomes.EPOCH not in result:
            return TrialScheduler.CONTINUE  # a failed trial ends by itself
        epoch = int(result[outcomes.EPOCH])
        stopped = self.record.stopped_at(trial_id)
        if stopped is not None:  # decided before: a restored trial stops where it did
            return TrialScheduler.STOP if epoch >= stopped else TrialScheduler.CONTINUE
        if epoch >= self.max_t:
            finished = any(k.startswith("final/") for k in result)
            if not finished:  # trials longer than max_t: asha's cap
                self.record.add(Decision(self.max_t, trial_id, epoch, math.nan, None, True))
            return TrialScheduler.STOP
        rung = next((m for m in reversed(self.milestones)
                     if epoch >= m and not self.record.judged(m, trial_id)), None)  # fmt: skip
        value = result.get(self.guard)
        if rung is None or not isinstance(value, int | float):
            return TrialScheduler.CONTINUE
        cutoff = self.cutoff(rung)
        stop = cutoff is not None and self.sign * value < self.sign * cutoff
        self.record.add(Decision(rung, trial_id, epoch, float(value), cutoff, stop))
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def cutoff(self, rung: float) -> float | None:
        """The rung's (1 - 1/reduction_factor) quantile so far, in the guard's own units."""
        import numpy as np

        signed = [self.sign * v for v in self.record.values(rung)]
        if not signed:
            return None
        with warnings.catch_warnings():  # all NaN: no cutoff a value can be below
            warnings.simplefilter("ignore", RuntimeWarning)
            return self.sign * float(np.nanpercentile(signed, self.quantile))

    def debug_string(self) -> str:
        return f"Asha on {self.guard}: {len(self.record.decisions)} decisions"


def make_scheduler(spec: SchedulerSpec, guard: Objective | None, folder: Path) -> TrialScheduler:
    """The scheduler `spec.type` names: fifo (every trial trains all its epochs) or asha on
    `guard`, recording its decisions in `folder`."""
    if spec.type not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {spec.type!r}; known: {', '.join(SCHEDULERS)}")
    return SCHEDULERS[spec.type](spec, guard, folder)


def _asha(spec: SchedulerSpec, guard: Objective | None, folder: Path) -> Asha:
    if guard is None:
        raise ValueError("asha needs a guard metric")
    return Asha(guard=guard.metric, mode=guard.mode, grace_period=spec.grace_period,
                reduction_factor=spec.reduction_factor, max_t=spec.max_t,
                record=folder / RECORD)  # fmt: skip


SCHEDULERS = {
    "fifo": lambda spec, guard, folder: FIFOScheduler(),
    "asha": _asha,
}
