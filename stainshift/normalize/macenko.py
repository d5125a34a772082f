"""Macenko stain normalization, batched, with defaults for Romanowsky blood-smear stains.

Macenko et al., "A method for normalizing histology slides for quantitative analysis", ISBI 2009. Per image:

1. optical density ``OD = -log((I + 1) / I0)`` (pixels on the 0..255 scale); the illumination ``I0`` is either a
   fixed value (``background=255`` or an RGB triple) or, with ``background="auto"`` (default), estimated per image
   and per channel as the ``background_percentile`` (99th) percentile of its pixels (every ``N // 16384``-th pixel
   of an N-pixel image) - blood-smear backgrounds are rarely white (PBC is cream-pink, rapid stains are yellow),
   and a fixed 255 would read the tint as stain;
2. stained pixels: every channel's OD >= ``beta`` (the rest is background / plasma);
3. the plane of the two main eigenvectors of the stained pixels' OD covariance; each pixel's angle in that plane;
   the ``alpha`` and ``100 - alpha`` percentile angles give the two stain vectors (robust extremes);
4. the two vectors are ordered so that they pair up with the target's: when fitting, the one closer to the first
   reference vector (``stain_vectors``; for Romanowsky stains the azure / nuclear stain) comes first; when
   normalizing, each image's pair is ordered to match the fitted target's pair (the pairing with the larger
   summed similarity). With ``n_stains=3`` a third "residual" vector (the unit cross product of the two) takes
   what two stains cannot explain (it is carried over, not rescaled);
5. concentrations by least squares (pseudo-inverse of the stain matrix), the 99th percentile of each stain's
   concentration over the stained pixels scaled to the target's, and the image rebuilt with the target's stain
   vectors and illumination: ``I = I0_tgt * exp(-V_tgt @ C) - 1``, the exact inverse of step 1 (torchstain
   leaves out the ``- 1``, so its output is one grey level brighter).

Romanowsky stains (May-Grunwald-Giemsa, Wright, Leishman) mix a blue azure B / methylene blue (absorbs red light:
its OD vector has a large red share; it dominates nuclei and basophilic cytoplasm, and with eosin makes nuclei
purple) and a pink eosin Y (absorbs green and some blue: red cells, eosinophil granules). The default reference
vectors (:data:`ROMANOWSKY_STAIN_VECTORS`, azure first) are the average of the vectors this module fits on four
sites (200 PBC, 100 jtsc_tecom, 100 cellavision_blog and 100 BCCD images; all four order the same way). They only
order the target's vectors when fitting (the stain closer to the first reference is "stain 0"), and stand in for
an image's own vectors when it has too few stained pixels. For H&E pass
``stain_vectors=HE_STAIN_VECTORS``.

Fitting on a domain **pools** the stained pixels of all target images (subsampled to ``max_fit_pixels``, seeded)
for the stain vectors; the target's maximum concentrations are the **average of the per-image** 99th percentiles
(computed with the pooled vectors) and its illumination the average of the per-image ``I0``.

Degenerate input (fewer than ``min_pixels`` stained pixels, e.g. a lone cell on plasma or a blank field, or two
stain vectors less than ``min_angle`` degrees apart, e.g. a uniform tinted image whose "stains" are noise; real
images measured 10-40 degrees, PBC at least 16.7): with ``fallback="reference"`` (default) that image is
decomposed with the reference vectors and its concentrations are not rescaled (only the stain colours and the
illumination move to the target's); with ``fallback="identity"`` it is returned unchanged. Either way a
:class:`DegenerateImageWarning` names the images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from stainshift.errors import StainshiftError
from stainshift.normalize.base import Normalizer, TargetBatches

# OD unit vectors (R, G, B), azure (blue, nuclear) first. Average of fits on four sites (see the module docstring):
# PBC (0.71, 0.67, 0.21) / (0.42, 0.90, 0.08), jtsc_tecom (0.76, 0.62, 0.20) / (0.20, 0.97, 0.11),
# cellavision_blog (0.49, 0.87, 0.10) / (0.20, 0.87, 0.45), BCCD (0.59, 0.80, 0.14) / (0.32, 0.54, 0.78).
ROMANOWSKY_STAIN_VECTORS: tuple[tuple[float, float, float], ...] = (
    (0.6452, 0.7460, 0.1650),  # azure B / methylene blue: absorbs red (nuclei, basophilic cytoplasm)
    (0.3036, 0.8750, 0.3772),  # eosin Y: absorbs green and blue (red cells, eosinophil granules)
)
# Macenko's H&E reference (hematoxylin, eosin), as in torchstain / HEnorm_python.
HE_STAIN_VECTORS: tuple[tuple[float, float, float], ...] = (
    (0.5626, 0.7201, 0.4062),
    (0.2159, 0.8012, 0.5581),
)
_EPS = 1e-6
BACKGROUND_SAMPLE = 16384  # pixels (at least) that estimate I0: every (N // 16384)-th pixel of the image


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def _residual(v: torch.Tensor) -> torch.Tensor:
    """Unit vector(s) orthogonal to the two stain vectors ``(..., 2, 3)``, oriented to a positive OD sum."""
    r = torch.linalg.cross(v[..., 0, :], v[..., 1, :], dim=-1)
    r = torch.where(r.sum(-1, keepdim=True) < 0, -r, r)
    return _unit(r).unsqueeze(-2)


def masked_percentile(values: torch.Tensor, q: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The ``q``-th percentile (0..100) along the last dim over the ``mask``-ed entries; NaN where none.

    Same definition as ``numpy.percentile`` (linear interpolation between order statistics), but computed from the
    tail nearest to ``q`` with ``topk`` - much cheaper than sorting when ``q`` is close to 0 or 100.
    """
    n_all = values.shape[-1]
    upper = q >= 50.0
    if n_all == 0:
        return values.new_full(values.shape[:-1], float("nan"))
    if mask is None:  # one count for every row: positions are plain numbers
        pos = q / 100.0 * (n_all - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        d_lo, d_hi = (n_all - 1 - lo, n_all - 1 - hi) if upper else (lo, hi)
        tail = values.topk(max(d_lo, d_hi) + 1, dim=-1, largest=upper, sorted=True).values
        a, b = tail[..., d_lo], tail[..., d_hi]
        return a + (b - a) * (pos - lo)
    n = mask.sum(-1)
    pos = (q / 100.0) * (n - 1).clamp_min(0).to(values.dtype)
    lo = pos.floor()
    frac = pos - lo
    lo = lo.long()
    hi = lo + (frac > 0).long()
    # rank r (0-based, ascending) is entry n-1-r of the top-k in descending order (upper tail), entry r of the
    # bottom-k in ascending order (lower tail)
    d_lo, d_hi = (n - 1 - lo, n - 1 - hi) if upper else (lo, hi)
    d_max = d_lo if upper else d_hi
    k = min(int(d_max.max()) + 1, n_all)
    if k <= 0:
        return values.new_full(values.shape[:-1], float("nan"))
    values = values.masked_fill(~mask, float("-inf") if upper else float("inf"))
    tail = values.topk(k, dim=-1, largest=upper, sorted=True).values
    ab = tail.gather(-1, torch.stack([d_lo, d_hi], -1).clamp_(0, k - 1))
    out = ab[..., 0] + (ab[..., 1] - ab[..., 0]) * frac
    return out.masked_fill(n == 0, float("nan"))


class MacenkoNormalizer(Normalizer):
    """Macenko stain normalization (see the module docstring for every option)."""

    name = "macenko"
    target_stains: torch.Tensor
    target_max_conc: torch.Tensor
    target_background: torch.Tensor
    reference_stains: torch.Tensor

    def __init__(
        self,
        n_stains: int = 2,
        stain_vectors: Sequence[Sequence[float]] | torch.Tensor | None = None,
        background: str | float | Sequence[float] = "auto",
        background_percentile: float = 99.0,
        alpha: float = 1.0,
        beta: float = 0.15,
        max_percentile: float = 99.0,
        min_pixels: int = 100,
        min_angle: float = 5.0,
        fallback: str = "reference",
        concentration_pixels: str = "stained",
        max_fit_pixels: int = 2_000_000,
    ) -> None:
        super().__init__()
        if n_stains not in (2, 3):
            raise StainshiftError(f"macenko: n_stains={n_stains}: pass 2 (two stains) or 3 (two stains + residual)")
        refs = torch.as_tensor(ROMANOWSKY_STAIN_VECTORS if stain_vectors is None else stain_vectors,
                               dtype=torch.float32)
        if refs.dim() != 2 or refs.shape[1] != 3 or refs.shape[0] not in (2, n_stains):
            raise StainshiftError(f"macenko: stain_vectors must be {n_stains} (or 2) RGB OD vectors, "
                                  f"shape ({n_stains}, 3); got shape {tuple(refs.shape)}")
        if not torch.isfinite(refs).all() or bool((refs.norm(dim=1) < _EPS).any()):
            raise StainshiftError("macenko: stain_vectors must be finite and non-zero")
        refs = _unit(refs)
        if refs.shape[0] < n_stains:
            refs = torch.cat([refs, _residual(refs)])
        if isinstance(background, str):
            if background != "auto":
                raise StainshiftError(f"macenko: background={background!r}: pass 'auto', a number (0..255) "
                                      f"or an RGB triple")
            fixed = None
        else:
            fixed = torch.as_tensor(background, dtype=torch.float32).flatten()
            if fixed.numel() == 1:
                fixed = fixed.repeat(3)
            if fixed.numel() != 3 or not bool(((fixed > 0) & (fixed <= 255)).all()):
                raise StainshiftError(f"macenko: background={background!r}: pass 'auto', a number in (0, 255] "
                                      f"or an RGB triple of such numbers")
        checks = {"background_percentile": (background_percentile, 50, 100), "alpha": (alpha, 0, 50),
                  "max_percentile": (max_percentile, 50, 100), "min_angle": (min_angle, 0, 90),
                  "beta": (beta, 0, 10)}
        for key, (value, lo, hi) in checks.items():
            if not lo <= value <= hi:
                raise StainshiftError(f"macenko: {key}={value}: pass a value in [{lo}, {hi}]")
        if fallback not in ("reference", "identity"):
            raise StainshiftError(f"macenko: fallback={fallback!r}: pass 'reference' or 'identity'")
        if concentration_pixels not in ("stained", "all"):
            raise StainshiftError(f"macenko: concentration_pixels={concentration_pixels!r}: pass 'stained' or 'all'")
        if min_pixels < 2 or max_fit_pixels < min_pixels:
            raise StainshiftError(f"macenko: min_pixels={min_pixels}, max_fit_pixels={max_fit_pixels}: pass "
                                  f"2 <= min_pixels <= max_fit_pixels")
        self.n_stains = n_stains
        self.fixed_background = None if fixed is None else tuple(float(v) for v in fixed)
        self.background_percentile = float(background_percentile)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.max_percentile = float(max_percentile)
        self.min_pixels = int(min_pixels)
        self.min_angle = float(min_angle)
        self.fallback = fallback
        self.concentration_pixels = concentration_pixels
        self.max_fit_pixels = int(max_fit_pixels)
        self.register_buffer("reference_stains", refs)  # (n_stains, 3) unit OD vectors
        self.register_buffer("target_stains", refs.clone())
        self.register_buffer("target_max_conc", torch.ones(n_stains))
        self.register_buffer("target_background", torch.full((3,), 255.0))

    # -------------------------------------------------------------------------------------------------------
    # pieces, batched over images

    def illumination(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image background intensity ``(B, 3)`` on the 0..255 scale."""
        if self.fixed_background is not None:
            return torch.tensor(self.fixed_background, dtype=x.dtype, device=x.device).expand(x.shape[0], 3)
        flat = x.flatten(2)
        # a regular subsample of at most ~16k pixels: the bright percentile of a background is robust to it,
        # and this estimate is otherwise the costliest step on large images
        q = masked_percentile(flat[:, :, :: max(1, flat.shape[2] // BACKGROUND_SAMPLE)], self.background_percentile)
        return (q * 255.0).clamp_min(1.0)  # a black image must not give log(0)

    def optical_density(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """OD ``(B, 3, N)``, stained-pixel mask ``(B, N)`` and illumination ``(B, 3)`` of RGB images in [0, 1]."""
        i0 = self.illumination(x)
        od = torch.log(i0)[:, :, None] - torch.log1p(x.flatten(2) * 255.0)
        return od, od.amin(dim=1) >= self.beta, i0  # every channel >= beta (amin: ~8x faster than all())

    @staticmethod
    def _order(v: torch.Tensor, order_by: torch.Tensor) -> torch.Tensor:
        """Swap each pair ``(B, 2, 3)`` where the swapped pairing is closer to ``order_by`` ``(2, 3)``."""
        r = order_by[:2].to(v.dtype)
        keep = ((v[:, 0] - v[:, 1]) * (r[0] - r[1])).sum(-1) >= 0
        return torch.where(keep[:, None, None], v, v.flip(1))

    def stain_vectors(self, od: torch.Tensor, mask: torch.Tensor | None, order_by: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stain matrices ``(B, n_stains, 3)`` (unit rows) and a ``(B,)`` flag of images that need the fallback.

        ``od`` (B, 3, N) with the stained-pixel ``mask`` (B, N), or ``mask=None`` when every pixel given is
        stained. The two stains of each image are ordered to pair up with ``order_by`` (default: the fitted
        target's vectors once fitted, else the references).
        """
        if order_by is None:
            order_by = self.target_stains if self.is_fitted else self.reference_stains
        if mask is None:
            count = torch.full((od.shape[0],), od.shape[2], dtype=od.dtype, device=od.device)
            n = count.clamp_min(2.0)
            d = od - (od.sum(2) / n[:, None])[:, :, None]
        else:
            m = mask.to(od.dtype)
            count = m.sum(1)
            n = count.clamp_min(2.0)
            d = (od - ((od * m[:, None]).sum(2) / n[:, None])[:, :, None]) * m[:, None]
        cov = d @ d.transpose(1, 2) / (n - 1)[:, None, None]
        few = count < self.min_pixels
        eye = torch.eye(3, dtype=od.dtype, device=od.device)
        cov = torch.where(few[:, None, None], eye, cov)
        _, vecs = torch.linalg.eigh(cov)
        plane = vecs[:, :, 1:]  # (B, 3, 2): second and first principal directions
        proj = plane.transpose(1, 2) @ od  # (B, 2, N)
        phi = torch.atan2(proj[:, 1], proj[:, 0])
        valid = None if mask is None else (mask | few[:, None]).unsqueeze(1).expand(-1, 2, -1)
        # both robust extremes from the upper tail: percentile_alpha(phi) = -percentile_(100-alpha)(-phi)
        angles = masked_percentile(torch.stack([-phi, phi], 1), 100.0 - self.alpha, valid)
        angles = angles * angles.new_tensor([-1.0, 1.0])  # (B, 2): low and high angle
        v = plane @ torch.stack([torch.cos(angles), torch.sin(angles)], 1)  # (B, 3, 2)
        v = self._order(_unit(v.transpose(1, 2)), order_by)
        spread = (v[:, 0] * v[:, 1]).sum(-1).clamp(-1.0, 1.0)
        degenerate = few | (spread > math.cos(math.radians(self.min_angle))) | ~torch.isfinite(v).all((1, 2))
        if self.n_stains == 3:
            v = torch.cat([v, _residual(v)], 1)
        refs = self.reference_stains.to(od.dtype).expand_as(v)
        return torch.where(degenerate[:, None, None], refs, v), degenerate

    def concentrations(self, od: torch.Tensor, stains: torch.Tensor) -> torch.Tensor:
        """Least-squares stain concentrations ``(B, n_stains, N)`` of OD ``(B, 3, N)`` for stains ``(B, k, 3)``."""
        return torch.linalg.pinv(stains.transpose(1, 2)) @ od

    def max_concentrations(self, conc: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The ``max_percentile`` percentile of each stain's concentration ``(B, n_stains)`` over the ``mask``-ed
        pixels (``None``: all the pixels given); the residual stain of ``n_stains=3`` gets 1."""
        pixels = None if mask is None else mask[:, None].expand(-1, 2, -1)
        top = masked_percentile(conc[:, :2], self.max_percentile, pixels)
        if self.n_stains == 3:
            top = torch.cat([top, torch.ones_like(top[:, :1])], 1)
        return top

    # -------------------------------------------------------------------------------------------------------
    # fit and forward

    def _fit(self, batches: TargetBatches) -> None:
        # pass 1: illumination and the number of stained pixels
        backgrounds, total = [], 0
        for b in batches:
            _, mask, i0 = self.optical_density(b)
            backgrounds.append(i0)
            total += int(mask.sum())
        if total < self.min_pixels:
            raise StainshiftError(f"macenko: the target images have {total} stained pixels (OD >= beta={self.beta} "
                                  f"in every channel), fewer than min_pixels={self.min_pixels}; fit on images that "
                                  f"show cells, or lower beta")
        # pass 2: pool the stained pixels (a seeded uniform subsample beyond max_fit_pixels) -> stain vectors
        rate = min(1.0, self.max_fit_pixels / total)
        gen = torch.Generator(device="cpu").manual_seed(0)
        pooled = []
        for b in batches:
            od, mask, _ = self.optical_density(b)
            if rate < 1.0:
                mask = mask & (torch.rand(mask.shape, generator=gen) < rate).to(mask.device)
            pooled.append(od.transpose(1, 2)[mask])  # (n, 3)
        od_all = torch.cat(pooled).T[None]  # (1, 3, n)
        stains, degenerate = self.stain_vectors(od_all, None, order_by=self.reference_stains)
        if bool(degenerate.any()):
            raise StainshiftError("macenko: the target's stained pixels show a single colour (the two stain vectors "
                                  f"lie within min_angle={self.min_angle} degrees); fit on more varied images")
        # pass 3: per-image maximum concentrations with the pooled vectors, averaged
        tops = []
        for b in batches:
            od, mask, _ = self.optical_density(b)
            enough = mask.sum(1) >= self.min_pixels
            if bool(enough.any()):
                conc = self.concentrations(od[enough], stains.expand(int(enough.sum()), -1, -1))
                tops.append(self.max_concentrations(conc, mask[enough] if self.concentration_pixels == "stained"
                                                    else None))
        if not tops:
            raise StainshiftError(f"macenko: no target image has min_pixels={self.min_pixels} stained pixels; "
                                  f"fit on images that show cells, or lower min_pixels / beta")
        self.target_stains.copy_(stains[0])
        self.target_max_conc.copy_(torch.cat(tops).mean(0))
        self.target_background.copy_(torch.cat(backgrounds).mean(0))

    def _normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        od, mask, _ = self.optical_density(x)
        if b == 1:  # one image: work on its stained pixels only, cheaper than masking all of them
            stained, stained_mask = od[:, :, mask[0]], None
        else:
            stained, stained_mask = od, mask
        stains, degenerate = self.stain_vectors(stained, stained_mask)
        unmix = torch.linalg.pinv(stains.transpose(1, 2))  # (B, k, 3): least squares
        conc = unmix @ od
        if self.concentration_pixels == "all":
            top = self.max_concentrations(conc, None)
        else:
            top = self.max_concentrations(unmix @ stained if b == 1 else conc, stained_mask)
        target_max = self.target_max_conc.to(od.dtype)
        scale = torch.where(torch.isfinite(top) & (top > _EPS), target_max / top.clamp_min(_EPS),
                            torch.ones_like(top))
        scale = torch.where(degenerate[:, None], torch.ones_like(scale), scale)
        mixing = self.target_stains.to(od.dtype).T * scale[:, None, :]  # (B, 3, k): target stains, rescaled
        # I = I0_tgt * exp(-OD) - 1 on the 0..255 scale, i.e. exp(log I0_tgt - OD) / 255 - 1 / 255 on 0..1
        out = torch.log(self.target_background.to(od.dtype))[None, :, None] - mixing @ conc
        out = out.exp_().sub_(1.0).div_(255.0).reshape(b, 3, h, w)
        if self.fallback == "identity":
            out = torch.where(degenerate[:, None, None, None], x, out)
        return out, degenerate

    def _degenerate_reason(self) -> str:
        action = "left unchanged" if self.fallback == "identity" else "decomposed with the reference stain vectors"
        return (f"have fewer than {self.min_pixels} stained pixels (OD >= {self.beta}) or a single stain colour; "
                f"{action}")

    def extra_repr(self) -> str:
        bg = "auto" if self.fixed_background is None else self.fixed_background
        return (f"n_stains={self.n_stains}, background={bg}, alpha={self.alpha}, beta={self.beta}, "
                f"fallback={self.fallback!r}, fitted={self.is_fitted}")
