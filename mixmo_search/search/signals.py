"""SIGTERM is Ctrl-C: both stop a search the same clean way.

`docker stop`, Kubernetes, Slurm and systemd send SIGTERM, on which Ray's driver would exit
mid-step (Ray's own handler calls `sys.exit`, and the search dies with Ray's crash banner).
Here the first SIGINT or SIGTERM asks Ray Tune to stop as Ctrl-C does: Tune saves the search's
state one last time, the trials in flight are recorded as interrupted, the summary and the
resume command are printed, and the search exits 130. Before Tune runs, the first signal is a
KeyboardInterrupt. A later signal only says that the search is stopping: a second Ctrl-C that
cut Tune's last save short could leave a state `--resume` cannot read (SIGKILL still ends it
at once, and `--resume` picks up from Tune's previous save).

Signal handlers belong to the process, so the one `StopSignals` of the process is `STOP`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from ray.tune import Callback

Handler = Callable[[int, Any], Any]


class StopSignals:
    def __init__(self) -> None:
        self.received: str | None = None  # the first stop signal's name
        self._tune: Handler | None = None  # Ray Tune's SIGINT handler, once Tune runs

    def install(self) -> None:
        """Handle SIGINT and SIGTERM from now on (after `ray.init`, whose SIGTERM it replaces)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle)

    def reset(self) -> None:
        self.received, self._tune = None, None

    def take_over_from_tune(self) -> None:
        """Called once Ray Tune has put its SIGINT handler (which stops the search at its next
        step): keep it, to call on the first signal of either kind."""
        current = signal.getsignal(signal.SIGINT)
        if callable(current) and current != self.handle:
            self._tune = current
        self.install()

    def handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            _say(
                f"{name}: the search is already stopping and saving its state; `kill -9 "
                f"{os.getpid()}` ends it at once (then --resume goes on from its last save)"
            )
            return  # fmt: skip
        self.received = name
        if self._tune is None:
            raise KeyboardInterrupt
        _say(f"{name}: stopping the search; the trials in flight will continue on --resume")
        self._tune(signal.SIGINT, frame)  # sets Tune's stop flag, and puts back our handler
        self.install()


STOP = StopSignals()


class HandOverSignals(Callback):
    """Hands the search's signals to `STOP` once Tune has set its own (Tune calls `setup`
    after installing its SIGINT handler)."""

    def setup(self, **info: Any) -> None:
        STOP.take_over_from_tune()


def _say(line: str) -> None:
    """Print from a signal handler: straight to the file descriptor, since a `print` there
    raises if the handler interrupted another `print` (a reentrant call)."""
    text = f"[{time.strftime('%H:%M:%S')}] {line}\n".encode()
    try:
        os.write(sys.stdout.fileno(), text)
    except (OSError, ValueError, AttributeError):  # no file descriptor behind stdout
        pass
