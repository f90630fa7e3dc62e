"""Training batches on the device: batch repetition, member shuffles, input repetition,
random crop with zero padding and horizontal flip, all as batched tensor ops (airbench style).

The whole data set lives on the training device as uint8 (see `datasets.py`); a step's
images are gathered by index, cropped and flipped in one gather, and normalised in one
multiply-add. There are no DataLoader workers and no Python loop over samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def epoch_indices(
    n_images: int,
    *,
    batch_size: int,
    batch_repeat: int,
    n_members: int,
    input_repeat: float,
    device: torch.device,
) -> Tensor:
    """(steps, M, B) training-set indices for one epoch (docs/method.md §Training step 1-2).

    Each batch holds B/b unique images, each repeated b times *by index* so that repeats are
    augmented independently; an epoch therefore has b times the steps of a vanilla one.
    Member 0 sees a random permutation of the slots, member k that list permuted again; a
    fraction `input_repeat` of slots gives every member member 0's index (one draw per slot,
    shared by all members, §Training step 2). The last partial batch is dropped so that every
    step has the same shape.
    """
    unique = batch_size // batch_repeat
    steps = n_images // unique
    order = torch.randperm(n_images, device=device)[: steps * unique]
    slots = order.view(steps, unique).repeat_interleave(batch_repeat, dim=1)  # (S, B)
    member0 = slots.gather(1, _row_permutations(steps, batch_size, device))
    others = [
        member0.gather(1, _row_permutations(steps, batch_size, device))
        for _ in range(1, n_members)
    ]
    if input_repeat > 0 and others:
        same = torch.rand(steps, batch_size, device=device) < input_repeat  # (S, B)
        others = [torch.where(same, member0, shuffled) for shuffled in others]
    return torch.stack([member0, *others], dim=1)  # (S, M, B)


def _row_permutations(rows: int, width: int, device: torch.device) -> Tensor:
    """(rows, width): an independent random permutation of range(width) in each row."""
    return torch.rand(rows, width, device=device).argsort(dim=1)


def crop_flip(images: Tensor, *, padding: int, flip: bool) -> Tensor:
    """Random crop after zero padding, and random horizontal flip, per image in one gather.

    images: (N, C, H, W) uint8. Returns (N, C, H, W) uint8 in channels_last layout. The
    padding is zeros in pixel space, as torchvision's RandomCrop(padding) on the reference.
    """
    n, _, height, width = images.shape
    device = images.device
    if padding:
        images = torch.nn.functional.pad(images, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (n, 1), device=device)
    left = torch.randint(0, 2 * padding + 1, (n, 1), device=device)
    rows = top + torch.arange(height, device=device)  # (N, H)
    cols = torch.arange(width, device=device).expand(n, width)  # (N, W)
    if flip:
        mirrored = torch.rand(n, 1, device=device) < 0.5
        cols = torch.where(mirrored, width - 1 - cols, cols)
    cols = left + cols
    picked = images[
        torch.arange(n, device=device)[:, None, None], :, rows[:, :, None], cols[:, None, :]
    ]  # (N, H, W, C)
    return picked.permute(0, 3, 1, 2)


class Normalizer:
    """uint8 pixels -> normalised float, folded into one multiply-add."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, device=device).view(1, -1, 1, 1) / std_t

    def __call__(self, images: Tensor) -> Tensor:
        return images.float() * self.scale + self.shift


def augmented(
    images: Tensor, idx: Tensor, normalize: Normalizer, *, padding: int, flip: bool
) -> Tensor:
    """Augmented, normalised images for an (M, B) index tensor: (M, B, C, H, W)."""
    x = normalize(crop_flip(images[idx.reshape(-1)], padding=padding, flip=flip))
    return x.view(*idx.shape, *x.shape[1:])


def eval_batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    """Un-augmented uint8 chunks of an evaluation split, in order."""
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]
