"""Trainer checkpoints: everything needed to resume bit-for-bit, loaded with weights_only=True.

`last.pt` (written every epoch) holds the model, optimizer, epoch, best validation score
and every RNG state; `best.pt` holds the weights of the best validation epoch. Files are
written to a temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

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
    """The git commit of the package's checkout ("unknown" outside a git checkout)."""
    root = Path(__file__).resolve().parent.parent
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
