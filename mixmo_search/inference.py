"""Running a trained MixMo network: the device, the precision, and the heads' logits.

Torch only (no Ray, MLflow, Optuna or Streamlit), so the trainer, promotion and the served
MLflow model share it without the served model importing the trainer.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor

from mixmo_search.data import Normalizer, eval_batches
from mixmo_search.errors import ConfigError
from mixmo_search.models import MixMoNet


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when a device is visible, else the CPU; `cuda` without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("`run.device` is cuda but no CUDA device is visible; use cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast(device: torch.device, precision: str) -> AbstractContextManager[object]:
    """bf16 autocast on CUDA when `precision` is bf16; fp32 everywhere else.

    The CPU always runs fp32: CPUs without native bf16 (like this project's CI machines) run
    bf16 convolutions slower than fp32 ones.
    """
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def member_logits(
    model: MixMoNet,
    images: Tensor,
    normalize: Normalizer,
    batch_size: int,
    *,
    precision: str = "fp32",
) -> Tensor:
    """(M, N, K) float32 logits of every head for un-augmented uint8 (or [0, 255] float)
    images: the test-time pass, where every encoder sees the image."""
    model.eval()
    device = images.device
    with autocast(device, precision):
        logits = [
            model(normalize(chunk).contiguous(memory_format=torch.channels_last))
            for chunk in eval_batches(images, batch_size)
        ]
    return torch.cat(logits, dim=1).float()
