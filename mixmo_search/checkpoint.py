"""Trainer checkpoints: everything a resumed run needs, loaded with weights_only=True.

`last.pt` holds the model, optimizer, epoch, best validation score and every RNG state;
`best.pt` holds the weights of the kept epoch. A resumed CPU run continues bit for bit; on
CUDA, cudnn's autotuned kernels (`cudnn.benchmark`) make it equal up to float rounding.
Files are replaced atomically (`files.replacing`), so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import torch

from mixmo_search import files
from mixmo_search.errors import UserError

LAST = "last.pt"
BEST = "best.pt"
LAST_KEYS = ("model", "optimizer", "rng", "epoch", "best_acc", "best_epoch", "config")


@cache
def code_revision() -> str:
    """The git commit of the package's checkout, else `$MIXMO_COMMIT` (set by the worker image,
    which installs a copy without .git), else "unknown"."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return os.environ.get("MIXMO_COMMIT", "unknown")
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def rng_state(host_gen: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "host": host_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], host_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    host_gen.set_state(state["host"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, payload: dict[str, Any]) -> None:
    with files.replacing(path) as tmp:
        torch.save(payload, tmp)


class CheckpointError(UserError):
    """A file that is not a checkpoint this trainer wrote (damaged, foreign or crafted)."""


def load(
    path: Path, device: torch.device | str = "cpu", *, keys: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The checkpoint at `path`, holding at least `keys`; tensors and plain data only
    (weights_only: a crafted file cannot run code). Anything else is one CheckpointError."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError,
            KeyError, TypeError, AttributeError) as err:  # fmt: skip
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a checkpoint this trainer wrote ({reason}); move it aside, or "
            "choose another run.out_dir"
        ) from None
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}: it is not a checkpoint this trainer wrote; "
            "move it aside, or choose another run.out_dir"
        )
    return state
