"""Weight initialisation shared by every family (docs/method.md §Architectures).

Every conv, and the WRN heads, draw from a normal truncated at +-2 standard deviations whose
spread is widened so that the *truncated* distribution has He's std, sqrt(2 / fan_in). The
PreActResNet heads draw from N(0, 0.01) instead. BatchNorm starts as the identity; biases at 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

TRUNCATION = 2.0  # in standard deviations of the untruncated normal
# Std of N(0, 1) truncated to (-a, a) is sqrt(1 - 2a phi(a) / P(|z| < a)): 0.8796256610342398
# at a = 2. Dividing the wanted std by it gives the untruncated std whose truncation has it.
_DENSITY_AT_BOUND = math.exp(-(TRUNCATION**2) / 2) / math.sqrt(2 * math.pi)
_MASS_INSIDE = math.erf(TRUNCATION / math.sqrt(2))
TRUNCATED_STD = math.sqrt(1 - 2 * TRUNCATION * _DENSITY_AT_BOUND / _MASS_INSIDE)


def he_std(weight: Tensor) -> float:
    """He's std for a layer followed by ReLU: gain sqrt(2) over sqrt(fan_in)."""
    fan_in = weight[0].numel()  # in_channels x kernel area (conv) or in_features (linear)
    return nn.init.calculate_gain("relu") / math.sqrt(fan_in)


@torch.no_grad()
def he_truncated_normal_(weight: Tensor) -> Tensor:
    """Fill `weight` in place with a truncated normal whose std is `he_std(weight)`."""
    spread = he_std(weight) / TRUNCATED_STD
    bound = TRUNCATION * spread
    return nn.init.trunc_normal_(weight, mean=0.0, std=spread, a=-bound, b=bound)


@torch.no_grad()
def init_weights(net: nn.Module, *, head_std: float | None) -> None:
    """Initialise `net` in place: convs truncated He; linears likewise, or N(0, head_std).

    `head_std=None` gives the linear heads the convs' truncated He (WRN); a float gives them
    N(0, head_std) (PreActResNet, 0.01). A fused head of M heads, `nn.Linear(F, M * K)`, has the
    same fan_in F as each head, so it is drawn exactly as M separate heads would be.
    """
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d | nn.Linear):
            if isinstance(module, nn.Linear) and head_std is not None:
                nn.init.normal_(module.weight, mean=0.0, std=head_std)
            else:
                he_truncated_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
