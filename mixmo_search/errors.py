"""User-facing errors: one line naming what is wrong, where, what is allowed and the fix.

A `UserError` reaching a CLI entry point is printed as a single line and the process exits
with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input from the user (config, search space, CLI flag, missing data)."""


class ConfigError(UserError):
    """A training configuration key or value is invalid."""


class DataError(UserError):
    """A data set is missing or malformed."""


class UnknownModel(UserError):
    """A model name that is not in the registry."""


F = TypeVar("F", bound=Callable[..., object])


def exit_on_user_error(main: F) -> F:
    """Decorate a CLI `main` so a UserError becomes one stderr line and exit code 2."""

    @wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]
