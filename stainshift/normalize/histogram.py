"""Histogram matching per L*a*b* channel: map each image's channel CDF onto the target domain's pooled CDF.

Each channel of each image is binned into ``bins`` equal bins between its own minimum and maximum, giving its CDF at
the bin edges. Each edge goes to the target value of the same quantile, through the inverse of the target's CDF
(piecewise linear over ``bins`` bins between the target's minimum and maximum); a pixel's new value is interpolated
linearly between the new values of its bin's two edges. This is the CDF mapping of skimage's ``match_histograms``
up to the binning (L*a*b* within ~0.2 units of the exact rank mapping on simulated cells), computed for a whole
batch at once with ``bincount`` and a ``searchsorted`` over the bin edges only.

Target statistics: one **pooled** histogram per channel over every pixel of every target image (large images
weigh more), kept in buffers as the channel range and the CDF at the ``bins + 1`` bin edges.

Degenerate input: a channel whose standard deviation in an image is below ``min_std`` (blank, uniform or nearly
uniform image) has no distribution worth matching - matching would stretch its noise over the target's whole
range; it is shifted so that its mean lands on the target's median instead, with a :class:`DegenerateImageWarning`.
"""

from __future__ import annotations

import torch

from stainshift.errors import StainshiftError
from stainshift.normalize.base import Normalizer, TargetBatches, lab_to_rgb, rgb_to_lab

_FLAT = 1e-4  # minimum L*a*b* range of the target histogram


class HistogramNormalizer(Normalizer):
    """Per-channel L*a*b* histogram matching to the target's pooled histogram (``bins`` bins per channel).

    ``min_std``: L*a*b* units below which a channel counts as (nearly) uniform and is only shifted.
    """

    name = "histogram"
    target_low: torch.Tensor
    target_high: torch.Tensor
    target_cdf: torch.Tensor

    def __init__(self, bins: int = 256, min_std: float = 0.5) -> None:
        super().__init__()
        if not 2 <= bins <= 65536:
            raise StainshiftError(f"histogram: bins={bins}: pass a number of bins in [2, 65536]")
        if not min_std >= 0:
            raise StainshiftError(f"histogram: min_std={min_std}: pass a value >= 0 (L*a*b* units)")
        self.bins = int(bins)
        self.min_std = float(min_std)
        self.register_buffer("target_low", torch.zeros(3))
        self.register_buffer("target_high", torch.ones(3))
        self.register_buffer("target_cdf", torch.linspace(0.0, 1.0, self.bins + 1).repeat(3, 1))

    def _bin(self, v: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bin index (long) and position inside the bin (0..1) of values ``(B, 3, N)`` for ranges ``(B, 3)``."""
        width = ((high - low) / self.bins).clamp_min(1e-12)
        pos = (v - low[..., None]) / width[..., None]
        idx = pos.floor().clamp(0, self.bins - 1)
        return idx.long(), (pos - idx).clamp(0.0, 1.0)

    def _histograms(self, v: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Counts ``(B, 3, bins)`` of values ``(B, 3, N)``."""
        b = v.shape[0]
        idx, _ = self._bin(v, low, high)
        offset = torch.arange(b * 3, device=v.device).reshape(b, 3, 1) * self.bins
        counts = torch.bincount((idx + offset).flatten(), minlength=b * 3 * self.bins)
        return counts.reshape(b, 3, self.bins).to(v.dtype)

    def _cdf(self, counts: torch.Tensor) -> torch.Tensor:
        """CDF at the bin edges ``(..., bins + 1)``, from 0 to 1."""
        cum = counts.cumsum(-1)
        cdf = cum / cum[..., -1:].clamp_min(1)
        return torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)

    def _fit(self, batches: TargetBatches) -> None:
        low = torch.full((3,), float("inf"), device=self.device)
        high = torch.full((3,), float("-inf"), device=self.device)
        for b in batches:  # pass 1: the pooled range
            lab = rgb_to_lab(b)
            low = torch.minimum(low, lab.amin(dim=(0, 2, 3)))
            high = torch.maximum(high, lab.amax(dim=(0, 2, 3)))
        high = torch.maximum(high, low + _FLAT)
        counts = torch.zeros(3, self.bins, device=self.device)
        for b in batches:  # pass 2: the pooled histogram
            lab = rgb_to_lab(b).flatten(2)
            n = lab.shape[0]
            counts += self._histograms(lab, low.expand(n, 3), high.expand(n, 3)).sum(0)
        self.target_low.copy_(low)
        self.target_high.copy_(high)
        self.target_cdf.copy_(self._cdf(counts))

    def _inverse_target_cdf(self, q: torch.Tensor) -> torch.Tensor:
        """L*a*b* values ``(3, M)`` at target quantiles ``q`` ``(3, M)`` (piecewise-linear inverse CDF)."""
        tcdf = self.target_cdf.to(q.dtype).contiguous()
        j = (torch.searchsorted(tcdf, q.contiguous(), right=True) - 1).clamp(0, self.bins - 1)
        t0, t1 = tcdf.gather(1, j), tcdf.gather(1, j + 1)
        step = t1 - t0
        inside = torch.where(step > 0, (q - t0) / step.clamp_min(1e-12), torch.zeros_like(q)).clamp(0.0, 1.0)
        low, high = self.target_low.to(q.dtype), self.target_high.to(q.dtype)
        return low[:, None] + (j + inside) * ((high - low) / self.bins)[:, None]

    def _normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        lab = rgb_to_lab(x).flatten(2)  # (B, 3, N)
        low, high = lab.amin(2), lab.amax(2)
        # source quantile of each pixel, piecewise-linear CDF
        cdf = self._cdf(self._histograms(lab, low, high))  # (B, 3, bins + 1)
        # the mapping at the source bin edges (target value of each edge's quantile), linear inside a bin
        edges = self._inverse_target_cdf(cdf.transpose(0, 1).reshape(3, -1)).reshape(3, b, -1).transpose(0, 1)
        idx, frac = self._bin(lab, low, high)
        e0 = edges.gather(2, idx)
        out = e0 + (edges.gather(2, idx + 1) - e0) * frac
        std, mean = torch.std_mean(lab, dim=2, correction=0)
        flat = std < self.min_std
        if bool(flat.any()):
            median = self._inverse_target_cdf(torch.full((3, 1), 0.5, dtype=lab.dtype, device=lab.device))
            shifted = lab - mean[..., None] + median[None]
            out = torch.where(flat[..., None], shifted, out)
        return lab_to_rgb(out.reshape(b, 3, h, w)), flat.any(1)

    def _degenerate_reason(self) -> str:
        return (f"are nearly uniform (an L*a*b* channel has std < {self.min_std}); those channels were shifted to "
                f"the target's median, not matched")

    def extra_repr(self) -> str:
        return f"bins={self.bins}, min_std={self.min_std}, fitted={self.is_fitted}"
