"""MixMoNet: M encoders -> mixing -> one shared core -> M heads, over any core.

The method, as this project trains it: docs/method.md (§Idea, §Training step, §Inference).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def _conv_config(conv: nn.Conv2d) -> tuple[object, ...]:
    return (
        tuple(conv.weight.shape),
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is None,
        conv.padding_mode,
    )


class MixMoNet(nn.Module):
    """Multi-input multi-output network: M first convs, one shared core, M linear heads.

    `forward(x, masks)` trains on M mixed inputs; `forward(x)` is the test-time pass where
    every encoder sees the same image. Both return logits of shape (M, B, K).

    The M heads are one `nn.Linear(feature_dim, M * K)` so a single matmul serves them all:
    head k is output rows k*K:(k+1)*K of `head`.
    """

    def __init__(
        self,
        *,
        encoders: Sequence[nn.Conv2d],
        core: nn.Module,
        feature_dim: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("MixMoNet needs at least one encoder; got n_members=0")
        configs = {_conv_config(conv) for conv in encoders}
        # The test-time pass sums the encoders' weights into one conv, which is only the sum
        # of their outputs when they share shape, stride and padding, with zero padding.
        if len(configs) != 1 or encoders[0].padding_mode != "zeros":
            raise ValueError(f"encoders must be identical zero-padded convs; got {configs}")
        self.encoders = nn.ModuleList(encoders)
        self.core = core  # (B, C, h, w) -> (B, feature_dim)
        self.num_classes = num_classes
        self.head = nn.Linear(feature_dim, len(encoders) * num_classes)

    @property
    def n_members(self) -> int:
        """M, the number of encoders and heads."""
        return len(self.encoders)

    @property
    def encoder_stride(self) -> int:
        """Spatial stride of the encoders: masks are (H // encoder_stride, W // ...).

        (docs/method.md §Training step 5)
        """
        return self.encoders[0].stride[0]

    def forward(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """Logits (M, B, K).

        Mixed (training): x (M, B, C, H, W) and masks (M, B, 1, h, w) or (M, B, 1, 1, 1).
        Inference: x (B, C, H, W) and no masks.
        """
        z = self._sum_encoders(x) if masks is None else self._mix_encoders(x, masks)
        features = self.core(z)  # (B, F)
        logits = self.head(features).unflatten(1, (self.n_members, self.num_classes))  # (B, M, K)
        return logits.transpose(0, 1)  # (M, B, K)

    def ensemble_logits(self, x: Tensor) -> Tensor:
        """Ensemble prediction (B, K): mean of the heads' logits, as the reference code does."""
        return self(x).mean(0)

    def _mix_encoders(self, x: Tensor, masks: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[0] != self.n_members:
            raise ValueError(
                f"mixed forward needs x of shape (M={self.n_members}, B, C, H, W); "
                f"got {tuple(x.shape)}"
            )
        z = 0
        members = zip(self.encoders, x.unbind(0), masks.unbind(0), strict=True)
        for encoder, member_x, mask in members:
            features = encoder(member_x)  # (B, C, h, w)
            # Cast so bf16 autocast features are not promoted to fp32 by fp32 masks.
            z = z + mask.to(features.dtype) * features
        # the factor M keeps train features on the scale of the test-time sum
        # (docs/method.md §Training step 6)
        return self.n_members * z

    def _sum_encoders(self, x: Tensor) -> Tensor:
        # z = sum_k conv_k(x) (docs/method.md §Inference). Convolution is linear in its weights,
        # so this is one conv with the summed weights and biases: one kernel instead of M. Adding
        # (rather than stacking) keeps the weights' channels_last layout.
        first = self.encoders[0]
        weight = sum(conv.weight for conv in self.encoders)
        bias = None if first.bias is None else sum(conv.bias for conv in self.encoders)
        return F.conv2d(x, weight, bias, first.stride, first.padding, first.dilation, first.groups)
