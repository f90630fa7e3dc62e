"""Trainer checkpoints: everything a resumed run needs, loaded with weights_only=True.

`last.pt` holds the model, optimizer, epoch, best validation score and every RNG state;
`best.pt` holds the weights of the kept epoch. A resumed CPU run continues bit for bit; on
CUDA, cudnn's autotuned kernels (`cudnn.benchmark`) make it equal up to float rounding.
Files are replaced atomically (`files.replacing`), so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import torch

from mixmo_search import files

LAST = "last.pt"
BEST = "best.pt"


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


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=True)
