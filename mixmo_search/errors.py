"""User-facing errors: one line naming what is wrong, where, what is allowed and the fix.

A `UserError` reaching a CLI entry point is printed as a single line and the process exits
with code 2; a `TrainingDiverged` run is one line and exit code 1 (the input was valid, the
training failed); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

EXIT_FAILED, EXIT_USAGE = 1, 2


class UserError(Exception):
    """Bad input from the user (config, search space, CLI flag, missing data)."""


class ConfigError(UserError):
    """A training configuration key or value is invalid."""


class DataError(UserError):
    """A data set is missing or malformed."""


class UnknownModel(UserError):
    """A model name that is not in the registry."""


class TrainingDiverged(Exception):
    """The loss went non-finite or exploded: the run failed, and nothing it made is kept."""

    def __init__(self, epoch: int, step: int, loss: float, lr: float) -> None:
        self.epoch, self.step, self.loss, self.lr = epoch, step, loss, lr
        super().__init__(
            f"diverged at epoch {epoch}, step {step}: loss {loss:.4g} (non-finite or above "
            f"the divergence bound); lower `optim.lr` (the step's lr was {lr:.4g}) or check "
            "the config"
        )

    def __reduce__(self) -> tuple[type, tuple[int, int, float, float]]:
        # Ray pickles a trial's exception to the driver; rebuild it from its fields
        return type(self), (self.epoch, self.step, self.loss, self.lr)


F = TypeVar("F", bound=Callable[..., object])


def exit_on_user_error(main: F) -> F:
    """Decorate a CLI `main` so a UserError becomes one stderr line and exit code 2, and a
    diverged training one line and exit code 1."""

    @wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except TrainingDiverged as err:
            print(f"error: training {err}", file=sys.stderr)
            raise SystemExit(EXIT_FAILED) from None

    return wrapper  # type: ignore[return-value]
