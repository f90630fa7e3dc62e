"""scheduler: our asha decides as Ray's own asha does, and an interruption changes nothing.

Generated searches (trials reporting epochs in an interleaved order) are fed to Ray's
`AsyncHyperBandScheduler`, uninterrupted, and to `Asha`, which is pickled and unpickled (as
`Tuner.restore` does) at a generated point; every decision must be the same. Then the rung
record itself is replayed against the rule (`asha_rule`), as the interruption tests do.
"""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from mixmo_search.search.scheduler import RECORD, Asha, RungRecord, rung_milestones
from mixmo_search.search.types import Objective, SchedulerSpec

GUARD = "val/acc"


@st.composite
def searches(draw):
    """(scheduler options, the events `(trial, epoch, value)` in the order they report)."""
    grace = draw(st.integers(1, 3))
    factor = draw(st.sampled_from([2, 3, 4, 1.5]))
    max_t = draw(st.integers(grace, 12))
    n_trials = draw(st.integers(1, 8))
    value = st.one_of(st.floats(0, 1), st.just(float("nan")))
    queues = {}
    for i in range(n_trials):
        epochs = draw(st.integers(1, max_t))  # where the trial would end by itself
        queues[f"t{i}"] = [(f"t{i}", e, draw(value)) for e in range(1, epochs + 1)]
    events = []
    while any(queues.values()):
        trial = draw(st.sampled_from(sorted(t for t, q in queues.items() if q)))
        events.append(queues[trial].pop(0))
    options = {"grace_period": grace, "reduction_factor": factor, "max_t": max_t,
               "mode": draw(st.sampled_from(["max", "min"]))}  # fmt: skip
    return options, events


def _ray_decisions(options, events) -> list[str]:
    ray_asha = AsyncHyperBandScheduler(time_attr="epoch", metric=GUARD, **options)
    trials = {t: Trial("noop", trial_id=t, stub=True) for t, _, _ in events}
    for trial in trials.values():
        ray_asha.on_trial_add(None, trial)
    return _feed(lambda t, result: ray_asha.on_trial_result(None, trials[t], result), events)


def _feed(decide, events) -> list[str]:
    """Each event's decision; a stopped trial's later events never happen."""
    stopped, decisions = set(), []
    for trial, epoch, value in events:
        if trial in stopped:
            continue
        decision = decide(trial, {"epoch": epoch, GUARD: value})
        decisions.append(decision)
        if decision == TrialScheduler.STOP:
            stopped.add(trial)
    return decisions


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")  # a rung of NaN values
@settings(max_examples=150, deadline=None)
@given(searches(), st.floats(0, 1))
def test_asha_decides_as_ray_s_and_keeps_its_decisions_through_a_restore(
    tmp_path_factory, asha_rule, search, cut
):
    options, events = search
    record = tmp_path_factory.mktemp("asha") / RECORD
    asha = Asha(guard=GUARD, record=record, **options)
    interrupted_at = int(cut * len(events))
    state = {"asha": asha, "seen": 0}

    def decide(trial: str, result: dict) -> str:
        if state["seen"] == interrupted_at:  # the driver stops; Tune restores the scheduler
            state["asha"] = pickle.loads(pickle.dumps(state["asha"]))
        state["seen"] += 1
        return state["asha"].decide(trial, result)

    assert _feed(decide, events) == _ray_decisions(options, events)
    decisions = [vars(d) for d in RungRecord.load(record).decisions]
    asha_rule(decisions, reduction_factor=options["reduction_factor"], mode=options["mode"],
              max_t=options["max_t"])  # fmt: skip


def test_rungs_are_ray_s_below_max_t():
    assert rung_milestones(1, 2, 8) == [1, 2, 4]
    assert rung_milestones(6, 2, 12) == [6]
    assert rung_milestones(1, 4, 1) == []
    assert rung_milestones(1, 1.5, 4) == [1, 1.5, 2.25, 3.375]


def test_a_decision_once_recorded_stands(tmp_path):
    """A stop that a dead driver never carried out is made again when the trial reports."""
    spec = SchedulerSpec("asha", grace_period=1, reduction_factor=2, max_t=4)
    from mixmo_search.search.scheduler import make_scheduler

    asha = make_scheduler(spec, Objective("val/acc", "max"), tmp_path)
    assert asha.decide("a", {"epoch": 1, GUARD: 0.9}) == TrialScheduler.CONTINUE
    assert asha.decide("b", {"epoch": 1, GUARD: 0.1}) == TrialScheduler.STOP
    restored = pickle.loads(pickle.dumps(asha))
    assert restored.decide("b", {"epoch": 1, GUARD: 0.1}) == TrialScheduler.STOP
    assert asha.decide("c", {"epoch": 1, GUARD: 0.9}) == TrialScheduler.CONTINUE
    assert asha.decide("a", {"epoch": 2, GUARD: 0.9}) == TrialScheduler.CONTINUE
    assert asha.decide("c", {"epoch": 2, GUARD: 0.1}) == TrialScheduler.STOP
    # c restarted from scratch (the dead driver's state had no checkpoint of it): it trains
    # to the epoch it was stopped at, not one fewer
    restored = pickle.loads(pickle.dumps(asha))
    assert restored.decide("c", {"epoch": 1, GUARD: 0.9}) == TrialScheduler.CONTINUE
    assert restored.decide("c", {"epoch": 2, GUARD: 0.1}) == TrialScheduler.STOP
    assert restored.decide("a", {"epoch": 1, GUARD: 0.9}) == TrialScheduler.CONTINUE
    assert RungRecord.load(tmp_path / RECORD).stopped_at("b") == 1
    assert [d.trial_id for d in restored.record.decisions] == ["a", "b", "c", "a", "c"]
