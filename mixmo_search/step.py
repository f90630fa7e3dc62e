"""One training step's batch and loss, as the trainer builds them (docs/method.md §Training step).

`make_batch` turns a step's (M, B) training-set indices into the M members' augmented,
normalised and input-mixed images, their labels and the MixMo masks; `mixmo_loss` is the
reweighted sum of the heads' cross-entropies. `train()` calls both at every step, and the
tests call them with fixed draws and check them against the method written out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mixmo_search.config import TrainConfig
from mixmo_search.data import Normalizer, augmented
from mixmo_search.datasets import Split
from mixmo_search.mixing import Mix, loss_weights, make_mix, mix_inputs


@dataclass(frozen=True)
class Batch:
    """What one step trains on."""

    images: Tensor  # (M, B, C, H, W) normalised: augmented, and input-mixed when asked
    labels: Tensor  # (M, B) each member's own label
    mix: Mix  # MixMo masks (M, B, 1, h, w), each member's share kappa (M, B), binary or not
    partner_labels: Tensor | None = None  # (M, B) label of the image mixed into each input
    own_share: Tensor | None = None  # (M, B) the own label's weight in the soft target


def make_batch(
    train: Split,
    idx: Tensor,
    cfg: TrainConfig,
    *,
    p: float,
    normalize: Normalizer,
    mask_size: tuple[int, int],
    host_gen: torch.Generator,
) -> Batch:
    """The batch of indices `idx` (M, B) with the binary block used with probability `p`.

    Every slot is cropped and flipped on its own, so the b repeats of an image differ
    (§Training step 1); partners for input mixing are other random training images (§8).
    """
    aug = {"padding": cfg.data.crop_padding, "flip": cfg.data.flip}
    n_members, batch = idx.shape
    images = augmented(train.images, idx, normalize, **aug)  # (M, B, C, H, W)
    mix = make_mix(
        cfg.mixing.block,
        n_members=n_members,
        batch=batch,
        size=mask_size,
        alpha=cfg.mixing.alpha,
        p=p,
        host_gen=host_gen,
        device=idx.device,
    )
    if cfg.mixing.input_mix == "none":
        return Batch(images, train.labels[idx], mix)
    partner_idx = torch.randint(0, len(train), idx.shape, device=idx.device)
    partners = augmented(train.images, partner_idx, normalize, **aug)
    images, own_share, _ = mix_inputs(
        images,
        partners,
        mix.masks,
        kind=cfg.mixing.input_mix,
        prob=cfg.mixing.input_mix_prob,
        alpha=cfg.mixing.input_mix_alpha,
    )
    return Batch(images, train.labels[idx], mix, train.labels[partner_idx], own_share)


def mixmo_loss(logits: Tensor, batch: Batch, reweight_r: float) -> Tensor:
    """sum_k w_k CE(logits_k, target_k), averaged over the batch (§Training step 7-8).

    logits: (M, B, K). With input mixing the target of member k is the soft label
    own_share * own + (1 - own_share) * partner, whose cross-entropy is the same mix of the
    two hard-label cross-entropies.
    """
    flat = logits.float().flatten(0, 1)  # (M*B, K)
    labels = batch.labels
    ce = F.cross_entropy(flat, labels.flatten(), reduction="none").view_as(labels)  # (M, B)
    if batch.own_share is not None:
        partner_ce = F.cross_entropy(flat, batch.partner_labels.flatten(), reduction="none")
        ce = batch.own_share * ce + (1 - batch.own_share) * partner_ce.view_as(labels)
    return (loss_weights(batch.mix.kappa, reweight_r) * ce).sum(0).mean()
