"""Reinhard colour transfer: match each image's per-channel L*a*b* mean and standard deviation to the target's.

Reinhard, Adhikhmin, Gooch, Shirley, "Color transfer between images", IEEE CG&A 2001, with CIE L*a*b* (kornia's
D65 conversion) in place of the original l-alpha-beta space, as in most stain-normalization toolkits::

    out = (lab - mean_src) / std_src * std_tgt + mean_tgt        per image and per channel

Target statistics: the **average of the per-image** means and standard deviations over the target images (each
image weighs the same whatever its size). Standard deviations are population ones (ddof 0).

Degenerate input: a channel whose standard deviation is below ``min_std`` (a blank, uniform or nearly uniform
image) is not stretched, only shifted (``lab - mean_src + mean_tgt``), with a :class:`DegenerateImageWarning`;
stretching it would amplify noise by a huge factor (or divide by zero).
"""

from __future__ import annotations

import torch

from stainshift.errors import StainshiftError
from stainshift.normalize.base import Normalizer, TargetBatches, lab_to_rgb, rgb_to_lab


class ReinhardNormalizer(Normalizer):
    """Per-image L*a*b* mean/std matching. ``min_std``: L*a*b* units below which a channel is only shifted."""

    name = "reinhard"
    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(self, min_std: float = 0.5) -> None:
        super().__init__()
        if not min_std >= 0:
            raise StainshiftError(f"reinhard: min_std={min_std}: pass a value >= 0 (L*a*b* units)")
        self.min_std = float(min_std)
        self.register_buffer("target_mean", torch.zeros(3))
        self.register_buffer("target_std", torch.ones(3))

    @staticmethod
    def lab_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L*a*b* image, per-image mean and std ``(B, 3)`` of a batch of RGB images."""
        lab = rgb_to_lab(x)
        std, mean = torch.std_mean(lab, dim=(2, 3), correction=0)
        return lab, mean, std

    def _fit(self, batches: TargetBatches) -> None:
        stats = [self.lab_stats(b)[1:] for b in batches]
        means = torch.cat([m for m, _ in stats])
        stds = torch.cat([s for _, s in stats])
        self.target_mean.copy_(means.mean(0))
        self.target_std.copy_(stds.mean(0))

    def _normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lab, mean, std = self.lab_stats(x)
        flat = std < self.min_std
        gain = torch.where(flat, torch.ones_like(std), self.target_std.to(std.dtype) / std.clamp_min(1e-12))
        out = (lab - mean[:, :, None, None]) * gain[:, :, None, None] + self.target_mean.to(lab.dtype)[:, None, None]
        return lab_to_rgb(out), flat.any(1)

    def _degenerate_reason(self) -> str:
        return (f"are nearly uniform (an L*a*b* channel has std < {self.min_std}); those channels were shifted to "
                f"the target mean, not stretched")

    def extra_repr(self) -> str:
        return f"min_std={self.min_std}, fitted={self.is_fitted}"
