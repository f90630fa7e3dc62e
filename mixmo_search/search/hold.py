"""A hold point for fault tests: a trial stops after a chosen epoch until it is released.

`MIXMO_HOLD_AT=<epoch>:<folder>` in the search's environment: the first run of each trial,
once it has reported that epoch (and handed its checkpoint, if that epoch hands one), writes
`<folder>/<trial id>.held` holding its pid and waits until `<folder>/release` exists. A test
kills or signals exactly there, instead of racing a polling loop against a training that may
be epochs further by the time it looks; a retry of the trial does not hold again. Unset (as
outside tests), it costs one environment lookup per epoch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_ENV = "MIXMO_HOLD_AT"
RELEASE = "release"  # the file that lets every held trial go on


def hold_point() -> tuple[int, Path] | None:
    """(epoch, folder) from MIXMO_HOLD_AT, or None when unset."""
    raw = os.environ.get(HOLD_ENV, "")
    if not raw:
        return None
    epoch, _, folder = raw.partition(":")
    if not epoch.isdigit() or not folder:
        raise ValueError(f"{HOLD_ENV}={raw!r} must look like <epoch>:<folder>, e.g. 3:/tmp/hold")
    return int(epoch), Path(folder)


def maybe_hold(epoch: int, trial_id: str, *, poll_s: float = 0.05) -> None:
    """Wait at `epoch` as MIXMO_HOLD_AT says, once per trial (see the module docstring)."""
    point = hold_point()
    if point is None or point[0] != epoch:
        return
    folder = point[1]
    held = folder / f"{trial_id}.held"
    if held.exists():  # held once already: this is the trial's retry
        return
    folder.mkdir(parents=True, exist_ok=True)
    partial = held.with_suffix(".part")
    partial.write_text(str(os.getpid()))
    partial.replace(held)  # whole or absent for the test that reads it
    while not (folder / RELEASE).exists():
        time.sleep(poll_s)
