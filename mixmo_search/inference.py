"""Running a trained MixMo network: device, precision, the network from its weights, the heads'
logits, and one split's metrics.

Torch only (no Ray, MLflow, Optuna or Streamlit), so the trainer, promotion and the served
MLflow model share it without the served model importing the trainer.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from mixmo_search.config import TrainConfig
from mixmo_search.data import Normalizer, eval_batches
from mixmo_search.errors import ConfigError
from mixmo_search.metrics import evaluate
from mixmo_search.models import MixMoNet, create_model

if TYPE_CHECKING:
    from mixmo_search.datasets import Dataset, Split


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


@dataclass(frozen=True)
class InputFormat:
    """Images a network takes: (N, in_channels, image_size, image_size) raw pixels."""

    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]  # per channel in [0, 1] pixel units: the trainer's normalisation
    std: tuple[float, ...]

    @classmethod
    def of(cls, ds: Dataset) -> InputFormat:
        """The format of the data set a network was trained on."""
        return cls(ds.in_channels, ds.image_size, ds.num_classes, ds.mean, ds.std)


def create_network(
    config: TrainConfig,
    *,
    num_classes: int,
    in_channels: int,
    device: torch.device | str = "cpu",
) -> MixMoNet:
    """`config`'s network, freshly initialised, channels_last on `device`."""
    return create_model(
        config.model.name,
        n_members=config.model.n_members,
        num_classes=num_classes,
        in_channels=in_channels,
        stem_stride=config.model.stem_stride,
    ).to(device, memory_format=torch.channels_last)


class LoadedNetwork(NamedTuple):
    """A network ready for inference (eval mode), with what it was trained from."""

    model: MixMoNet
    config: TrainConfig
    normalize: Normalizer
    input_format: InputFormat


def build_network(
    config: TrainConfig,
    input_format: InputFormat,
    state_dict: dict[str, Tensor],
    device: torch.device | str = "cpu",
) -> LoadedNetwork:
    """The trained network of `config` with `state_dict` loaded, in eval mode on `device`."""
    device = torch.device(device)
    model = create_network(
        config, num_classes=input_format.num_classes, in_channels=input_format.in_channels
    )
    model.load_state_dict(state_dict)
    model = model.to(device).eval()
    normalize = Normalizer(input_format.mean, input_format.std, device)
    return LoadedNetwork(model, config, normalize, input_format)


def evaluate_split(
    model: MixMoNet,
    split: Split,
    normalize: Normalizer,
    *,
    prefix: str,
    batch_size: int,
    precision: str = "fp32",
    temperature: float | None = None,
) -> tuple[dict[str, float], Tensor]:
    """`metrics.evaluate` of `split` (keys `prefix/...`) and its (M, N, K) logits; the
    temperature is fitted here when None (validation), reused otherwise (test)."""
    logits = member_logits(model, split.images, normalize, batch_size, precision=precision)
    return evaluate(logits, split.labels, prefix=prefix, temperature=temperature), logits
