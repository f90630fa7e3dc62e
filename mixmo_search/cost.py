"""Inference cost of a trained network: parameters, forward FLOPs per image, images/s.

MixMo's claim is ensembling for free: at test time the M encoders' convolutions sum into
one (docs/method.md §Inference), so M subnetworks cost about one forward pass, where a deep
ensemble of k networks pays k. `inference_cost` measures a network the way the test split
runs it, on the device it trained on; the trainer logs the result as the final metrics
`cost/*`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

MIN_SECONDS = 0.5  # timed forwards run at least this long, for a steady images/s
MIN_ROUNDS = 2  # and at least this many, after one untimed warm-up forward


def count_params(model: nn.Module) -> int:
    """Every parameter of `model` (all M encoders and heads of a MixMoNet)."""
    return sum(p.numel() for p in model.parameters())


def forward_flops(forward: Callable[[Tensor], Tensor], image: Tensor) -> int:
    """FLOPs of `forward` on one image (1, C, H, W), as `FlopCounterMode` counts them:
    2 per multiply-add of convolutions and matrix products; norms and activations are free."""
    if image.shape[0] != 1:
        raise ValueError(f"forward_flops takes one image (1, C, H, W); got {tuple(image.shape)}")
    with FlopCounterMode(display=False) as counter:
        forward(image)
    return counter.get_total_flops()


def images_per_second(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    min_seconds: float = MIN_SECONDS,
    min_rounds: int = MIN_ROUNDS,
) -> float:
    """Images per second of `forward` over the batch `images`, on the batch's device."""
    forward(images)  # warm-up: cudnn autotuning and allocations are not inference cost
    _sync(images.device)
    rounds, start = 0, time.perf_counter()
    while True:
        forward(images)
        _sync(images.device)  # host sync: CUDA kernels run asynchronously
        rounds += 1
        elapsed = time.perf_counter() - start
        if rounds >= min_rounds and elapsed >= min_seconds:
            return rounds * len(images) / elapsed


def inference_cost(
    model: nn.Module,
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    min_seconds: float = MIN_SECONDS,
) -> dict[str, float]:
    """`cost/params`, `cost/flops` (forward FLOPs per image) and `cost/images_per_s` of
    `forward` (the test-time pass of `model`) measured on `images`, a batch on its device."""
    return {
        "cost/params": float(count_params(model)),
        "cost/flops": float(forward_flops(forward, images[:1])),
        "cost/images_per_s": images_per_second(forward, images, min_seconds=min_seconds),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
