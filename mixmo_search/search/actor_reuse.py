"""A trial whose reused worker dies while Tune hands it over is retried, not failed.

A search reuses its trial processes (`reuse_actors`: no new process and torch import per
trial). Tune hands a finished trial's process to the next trial with a `reset` task. If the
process dies meanwhile (killed, out of memory, its node lost), Ray Tune 2.60 hears of it twice,
from the `reset` task and from the actor, and its `_process_trial_failure` retries only a
RUNNING trial: the new trial, still PENDING while it is reset, ends in ERROR at once, its two
retries (`FailureConfig(max_failures=2)`) unused, and the search records a failed trial that
never ran. Found by the chaos soak (benchmarks/chaos.py: a trial worker SIGKILLed as Tune
reused it).

`requeue_when_a_reused_actor_dies` counts one actor's death once per trial: the first event
Tune handles as it does any crash (the trial, RUNNING, is requeued on a new process, one
failure counted), a second about the same actor is dropped; and a `reset` task's error that
comes while the trial is still PENDING gives way to the actor's own failure event, which Tune
handles as an actor that failed to start. Whichever event comes first, the trial is requeued
once. Applied by the search's driver before Tune starts.
"""

from __future__ import annotations

from typing import Any

_PATCHED = "_mixmo_requeues_reused_actor_deaths"
_HEARD = "_mixmo_actor_deaths"  # on the controller: (trial id, actor id) failures counted


def requeue_when_a_reused_actor_dies() -> None:
    """Patch Tune's controller (idempotent): see the module's docstring."""
    from ray.exceptions import RayActorError
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

    if getattr(TuneController, _PATCHED, False):
        return
    task_failure = TuneController._trial_task_failure

    def _trial_task_failure(self: Any, trial: Trial, exception: Exception) -> None:
        if isinstance(exception, RayActorError):
            resetting = trial in self._resetting_trials
            self._resetting_trials.discard(trial)  # its reset will never answer
            death = (trial.trial_id, exception.actor_id or str(exception))
            heard = self.__dict__.setdefault(_HEARD, set())
            if death in heard:
                return  # the same death again, from the trial's other task or the actor
            if resetting and trial.status == Trial.PENDING:
                return  # the reset task's error: the actor's own failure event requeues it
            heard.add(death)
        task_failure(self, trial, exception)

    TuneController._trial_task_failure = _trial_task_failure
    setattr(TuneController, _PATCHED, True)
