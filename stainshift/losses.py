"""Losses for the translation models.

:class:`GANLoss` hides the adversarial objective behind one call, ``loss(prediction, target_is_real)``:

- ``lsgan``: least squares, (D(x) - 1)^2 for real and D(x)^2 for fake (CycleGAN);
- ``vanilla``: binary cross-entropy on logits (pix2pix);
- ``hinge``: max(0, 1 - D(x)) / max(0, 1 + D(x)) for the discriminator, -D(x) for the generator.

Losses are computed in float32 even when the prediction comes out of a bfloat16 autocast region.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

GAN_MODES = ("lsgan", "vanilla", "hinge")

Prediction = torch.Tensor | Sequence[torch.Tensor] | Sequence[Sequence[torch.Tensor]]


class GANLoss(nn.Module):
    """Adversarial loss of a (patch) discriminator's raw output, averaged over patches.

    ``prediction`` may also be a list of outputs (multi-scale discriminators): the losses are summed; a list of lists
    (discriminators that also return intermediate features) uses the last element of each inner list.
    ``for_discriminator`` only matters for ``hinge``: the generator's hinge loss is -mean(D(fake)) whatever the target.
    """

    def __init__(self, mode: str = "lsgan") -> None:
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"unknown GAN loss {mode!r} (valid: {', '.join(GAN_MODES)})")
        self.mode = mode

    def forward(self, prediction: Prediction, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        if isinstance(prediction, torch.Tensor):
            return self._single(prediction, target_is_real, for_discriminator)
        total: torch.Tensor | None = None
        for item in prediction:
            pred = item if isinstance(item, torch.Tensor) else item[-1]
            loss = self._single(pred, target_is_real, for_discriminator)
            total = loss if total is None else total + loss
        if total is None:
            raise ValueError("GANLoss got an empty list of predictions")
        return total

    def _single(self, pred: torch.Tensor, real: bool, for_discriminator: bool) -> torch.Tensor:
        pred = pred.float()
        if self.mode == "lsgan":
            return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))
        if not for_discriminator:
            return -pred.mean()
        return F.relu(1.0 - pred).mean() if real else F.relu(1.0 + pred).mean()


def l1_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in float32."""
    return F.l1_loss(a.float(), b.float())


class FocalLoss(nn.Module):
    """Focal loss for classification (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log p_t``, averaged.

    Well-classified examples (p_t near 1) are down-weighted so training concentrates on hard and rare ones;
    ``gamma=0`` without ``alpha`` is cross-entropy. ``alpha`` is an optional per-class weight (sequence or tensor
    of length n_classes). ``reduction``: ``mean`` (over examples, as in the paper), ``sum`` or ``none``.
    Computed in float32 from ``log_softmax``, so large logits neither overflow nor give log(0).
    """

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | Sequence[float] | None = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal loss gamma must be >= 0 (got {gamma})")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"unknown reduction {reduction!r} (valid: mean, sum, none)")
        self.gamma, self.reduction = float(gamma), reduction
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, target.long().unsqueeze(1)).squeeze(1)
        loss = -log_p
        if self.gamma:
            loss = loss * (-torch.expm1(log_p)).clamp(min=0.0).pow(self.gamma)  # (1 - p_t)^gamma, precise near 1
        if self.alpha is not None:
            loss = loss * self.alpha.to(loss.device)[target]
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={None if self.alpha is None else self.alpha.tolist()}"
