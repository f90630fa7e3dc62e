"""MixMo mixing, batched on the training device: kappa draws, masks, p schedule, loss weights.

Everything here follows docs/method.md §Training step. Masks are built for a whole batch at
once as (M, B, 1, h, w) tensors at the encoders' output resolution; the only per-batch host
decisions (binary or linear, which member holds the patch) come from a CPU generator, so no
device sync is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mixmo_search.config import BINARY_BLOCKS


@dataclass(frozen=True)
class Mix:
    masks: Tensor  # (M, B, 1, h, w): member k's share of each feature position
    kappa: Tensor  # (M, B): each member's real share, the mask mean (§Training step 5: recomputed)
    binary: bool  # whether this batch used the binary block


def sample_kappa(alpha: float, n_members: int, batch: int, device: torch.device) -> Tensor:
    """(M, B) mixing ratios: Dirichlet(alpha, ..., alpha) (Beta for M = 2); alpha <= 0: 1/M."""
    if alpha <= 0:
        return torch.full((n_members, batch), 1.0 / n_members, device=device)
    concentration = torch.full((batch, n_members), float(alpha), device=device)
    # validate_args=False: checking the (constant, positive) concentration reads it back on
    # the host, two device syncs every step
    dirichlet = torch.distributions.Dirichlet(concentration, validate_args=False)
    return dirichlet.sample().T.contiguous()


def box_masks(kappa: Tensor, h: int, w: int) -> Tensor:
    """(B, 1, h, w) boxes of nominal area kappa, clipped at the border (reference rule).

    Sides are floor(w sqrt(kappa)) and floor(h sqrt(kappa)), the centre is uniform over the
    map and the box spans centre -/+ side // 2, clipped. With kappa ~ Beta(2, 2) on 32x32
    the real mean area is about 0.31, which the reweighting then uses.
    """
    n, device = kappa.shape[0], kappa.device
    root = kappa.sqrt()
    half_w = (torch.floor(w * root) // 2)[:, None, None]  # (B,1,1)
    half_h = (torch.floor(h * root) // 2)[:, None, None]
    cx = torch.randint(0, w, (n, 1, 1), device=device)
    cy = torch.randint(0, h, (n, 1, 1), device=device)
    rows = torch.arange(h, device=device)[None, :, None]  # (1,h,1)
    cols = torch.arange(w, device=device)[None, None, :]  # (1,1,w)
    inside_rows = (rows >= (cy - half_h).clamp(min=0)) & (rows < (cy + half_h).clamp(max=h))
    inside_cols = (cols >= (cx - half_w).clamp(min=0)) & (cols < (cx + half_w).clamp(max=w))
    return (inside_rows & inside_cols)[:, None].float()


def cow_masks(kappa: Tensor, h: int, w: int) -> Tensor:
    """(B, 1, h, w) CowMix-style masks: Gaussian-smoothed noise thresholded at quantile kappa.

    Beyond the paper's main method (one of its ablation blocks). Each sample gets its own
    smoothing scale sigma, log-uniform in [h/8, h/2] (4..16 px on 32x32, as CowMix).
    """
    n, device = kappa.shape[0], kappa.device
    sigma = torch.exp(
        torch.empty(n, device=device).uniform_(math.log(h / 8), math.log(h / 2))
    )  # (B,)
    radius = math.ceil(3 * h / 2)
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))  # (B, k)
    kernel = kernel / kernel.sum(1, keepdim=True)
    noise = torch.randn(1, n, h, w, device=device)
    # separable blur, one group per sample so each uses its own sigma
    blurred = F.conv2d(noise, kernel[:, None, None, :], padding=(0, radius), groups=n)
    blurred = F.conv2d(blurred, kernel[:, None, :, None], padding=(radius, 0), groups=n)
    flat = blurred.reshape(n, h * w)
    rank = (kappa * h * w).round().long().clamp(0, h * w - 1)
    threshold = flat.sort(dim=1).values.gather(1, rank[:, None])  # (B,1)
    keep = (flat < threshold) | (kappa[:, None] >= 1)
    return keep.float().reshape(n, 1, h, w)


def patchup_masks(kappa: Tensor, h: int, w: int) -> Tensor:
    """(B, 1, h, w) PatchUp-style block masks: Bernoulli seeds grown into square blocks.

    Beyond the paper's main method (an ablation block). The seed rate follows the official
    PatchUp correction so the covered fraction is close to kappa; kappa is re-measured after.
    """
    block = max(1, round(7 * h / 32))  # PatchUp uses 7 on 32x32 maps
    gamma = kappa * h * w / (block**2 * (h - block + 1) * (w - block + 1))
    seeds = torch.rand(kappa.shape[0], 1, h, w, device=kappa.device) < gamma[:, None, None, None]
    return F.max_pool2d(seeds.float(), block, stride=1, padding=block // 2)[..., :h, :w]


_BINARY = {"cut": box_masks, "cow": cow_masks, "patchup": patchup_masks}  # BINARY_BLOCKS


def p_at(epoch: int, epochs: int, p: float, decay_start: float = 11 / 12) -> float:
    """Probability of the binary block at 0-based `epoch` (§Training step 4).

    p_t = p until `decay_start` of training, then falls linearly to 0 at the last epoch, so
    training ends on the linear mix that test time uses.
    """
    if epochs <= 1 or decay_start >= 1:
        return p
    progress = epoch / (epochs - 1)
    return p * min(1.0, max(0.0, (1 - progress) / (1 - decay_start)))


def make_mix(
    block: str,
    *,
    n_members: int,
    batch: int,
    size: tuple[int, int],
    alpha: float,
    p: float,
    host_gen: torch.Generator,
    device: torch.device,
) -> Mix:
    """Masks for one batch. `block` is sum, linear or a binary block used with probability p.

    Binary batches: the role-0 member keeps the block's region and the others share the rest
    linearly in proportion to their kappa; which member plays role 0 is drawn once a batch.
    """
    h, w = size
    kappa = sample_kappa(0.0 if block == "sum" else alpha, n_members, batch, device)  # (M,B)
    use_binary = (
        block in BINARY_BLOCKS
        and n_members > 1
        and torch.rand((), generator=host_gen).item() < p  # host generator: no device sync
    )
    if not use_binary:
        # materialised (M*B*h*w floats), not a stride-0 view: binary and linear batches then
        # share one layout, so a compiled model keeps one graph instead of compiling two
        masks = kappa[:, :, None, None, None].expand(n_members, batch, 1, h, w).contiguous()
        return Mix(masks=masks, kappa=kappa, binary=False)
    region = _BINARY[block](kappa[0], h, w)  # (B,1,h,w)
    rest = kappa[1:] / kappa[1:].sum(0, keepdim=True).clamp(min=1e-12)  # (M-1,B)
    masks = torch.cat([region[None], (1 - region)[None] * rest[:, :, None, None, None]])
    # which member plays which role, drawn on the host; M views stacked, not an index tensor
    # copied to the device, which would wait for the device (a sync every binary batch)
    roles = torch.randperm(n_members, generator=host_gen).tolist()
    masks = torch.stack([masks[role] for role in roles])
    return Mix(masks=masks, kappa=masks.mean(dim=(2, 3, 4)), binary=True)


def loss_weights(kappa: Tensor, r: float) -> Tensor:
    """(M, B) weights w_k = M kappa_k^(1/r) / sum_j kappa_j^(1/r) (§Training step 7; r=inf: 1)."""
    n_members = kappa.shape[0]
    if math.isinf(r):
        return torch.ones_like(kappa)
    # kappa^(1/r) / sum_j kappa_j^(1/r) as a softmax of log(kappa)/r: the same weights, but a
    # small r (a high power) no longer underflows every member to 0/0 (found with r=1e-3)
    log_share = kappa.clamp(min=0).log() / r
    return n_members * torch.softmax(log_share, dim=0)


def mix_inputs(
    images: Tensor,
    partners: Tensor,
    member_masks: Tensor,
    *,
    kind: str,
    prob: float,
    alpha: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Input-level CutMix/Mixup per member (§Training step 8), with the visible-fraction labels.

    images, partners: (M, B, C, H, W) float; member_masks: (M, B, 1, h, w) MixMo masks.
    Returns (mixed images, lam (M,B), use (M,B) bool): the soft target is
    lam * own label + (1 - lam) * partner label, lam >= 0.5 by construction (the member's
    own image is the primary source, the one covering at least half of what it keeps).
    """
    n_members, batch, _, height, width = images.shape
    device = images.device
    use = torch.rand(n_members, batch, device=device) < prob
    mix_ratio = sample_kappa(alpha, 2, n_members * batch, device)[0]  # Beta(alpha, alpha)
    if kind == "cutmix":
        own = box_masks(mix_ratio, height, width).view(n_members, batch, 1, height, width)
    else:
        own = mix_ratio.view(n_members, batch, 1, 1, 1).expand(-1, -1, 1, height, width)
    # visible fraction of the own image inside the region this member keeps after MixMo
    mask_h, mask_w = member_masks.shape[-2:]
    own_small = F.adaptive_avg_pool2d(own.reshape(-1, 1, height, width), (mask_h, mask_w))
    own_small = own_small.view(n_members, batch, 1, mask_h, mask_w)
    kept = member_masks.expand(-1, -1, 1, mask_h, mask_w)
    visible = (own_small * kept).sum((2, 3, 4)) / kept.sum((2, 3, 4)).clamp(min=1e-8)
    flip = visible < 0.5  # swap roles so the own image stays primary
    own = torch.where(flip[:, :, None, None, None], 1 - own, own)
    lam = torch.where(flip, 1 - visible, visible)
    own = torch.where(use[:, :, None, None, None], own, torch.ones_like(own))
    mixed = own * images + (1 - own) * partners
    return mixed, torch.where(use, lam, torch.ones_like(lam)), use
