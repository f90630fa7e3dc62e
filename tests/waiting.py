"""The tests' one way to wait: `wait_until(condition, timeout, what)`, and one timeout scale.

Every timeout a test waits on goes through `scaled`, which multiplies it by the environment
setting MIXMO_TEST_TIMEOUT_SCALE (default 1): on a loaded or slow machine run, e.g.,
`MIXMO_TEST_TIMEOUT_SCALE=3 make test`. Import it as `from tests.waiting import ...` (the
repository root is on pytest's path, `pythonpath` in pyproject.toml).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import TypeVar

SCALE_ENV = "MIXMO_TEST_TIMEOUT_SCALE"
T = TypeVar("T")


def timeout_scale() -> float:
    """MIXMO_TEST_TIMEOUT_SCALE as a number > 0 (1 when unset)."""
    raw = os.environ.get(SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{SCALE_ENV}={raw!r} must be a number > 0, e.g. {SCALE_ENV}=3")
    return scale


def scaled(seconds: float) -> float:
    """`seconds` times the machine's timeout scale."""
    return seconds * timeout_scale()


class WaitTimeout(AssertionError):
    """A wait that ran out of time: the test fails, saying what it waited for."""


def wait_until(
    condition: Callable[[], T], timeout: float, what: str, *, interval: float = 0.2
) -> T:
    """Call `condition` until it returns something truthy, and return that.

    After `scaled(timeout)` seconds, fail with WaitTimeout naming `what` (e.g. "the 5th epoch
    of the trial in result.json") and how long it waited. An exception raised by `condition`
    ends the wait at once: raise (or assert) there what must never happen meanwhile, such as
    the process under test exiting.
    """
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(
                f"waited {limit:.1f} s for {what}, in vain (timeouts scale with {SCALE_ENV}, "
                f"now {timeout_scale():g})"
            )
        time.sleep(interval)
