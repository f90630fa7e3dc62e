"""User-facing errors: one line naming what is wrong, where, what is allowed and the fix.

A `UserError` reaching a CLI entry point is printed as a single line and the process exits
with code 2; a `TrainingDiverged` run is one line and exit code 1 (the input was valid, the
training failed); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from typing import NoReturn, TypeVar

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130  # 130: the shell's code for Ctrl-C


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


def one_line(message: str) -> str:
    """`message` with every character a terminal would not print as itself (line breaks,
    control characters from a file or a flag) written as its escape, so it stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in message)


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported in one line (what, and where to look) like every
    other mistake, instead of the usage text and the error on two."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {one_line(message)}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def exit_on_user_error(main: F) -> F:
    """Decorate a CLI `main` so a UserError becomes one stderr line and exit code 2, and a
    diverged training one line and exit code 1. Warnings print as one line each too."""

    @wraps(main)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _warning_line
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {one_line(str(err))}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except TrainingDiverged as err:
            print(f"error: training {err}", file=sys.stderr)
            raise SystemExit(EXIT_FAILED) from None

    return wrapper  # type: ignore[return-value]


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {one_line(str(message))}", file=sys.stderr)
