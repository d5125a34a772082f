"""Image and distribution metrics used to score translations (epoch selection, benchmarks).

All image functions take float batches ``B x 3 x H x W`` in [0, 1] (RGB) and return one value per image.

- :func:`ssim_gray`: SSIM (Gaussian window 11, sigma 1.5, ``c1 = 0.01^2``, ``c2 = 0.03^2``) between the grayscale
  versions (ITU-R 601 luma) of two batches, averaged over the valid part of the SSIM map (no padded border). It
  measures *structure*: a stain translation that keeps every cell's shape scores high even though colours change.
- :func:`psnr`: peak signal-to-noise ratio in dB (data range 1).
- :func:`lab_pixels` + :func:`sliced_wasserstein`: colour distance between two sets of images as the sliced
  Wasserstein-1 distance between their CIE L*a*b* pixel clouds (units: L*a*b*, roughly Delta-E 1976).
- :func:`frechet_distance`: Frechet distance between Gaussians fitted to two sets of feature vectors (the FID formula
  on any features; e.g. a classifier's penultimate layer).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import kornia
import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

ArrayLike = np.ndarray | torch.Tensor


def _check_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name}: expected a B x 3 x H x W float tensor in [0, 1], got {shape}")
    return x.float()


def ssim_gray(a: torch.Tensor, b: torch.Tensor, window_size: int = 11, blur_sigma: float = 0.0) -> torch.Tensor:
    """Per-image SSIM (B,) between the grayscale versions of two RGB batches of equal shape.

    The SSIM map is computed with ``kornia.metrics.ssim(..., padding="valid")`` and averaged per image, so only
    windows that lie fully inside the image count (images must be at least ``window_size`` pixels on each side).
    ``blur_sigma > 0`` first smooths both grayscale images with a Gaussian of that sigma in pixels (kernel
    ``2 ceil(3 sigma) + 1``, reflected borders): pixel noise, JPEG blocks and generator texture then stop counting
    and what remains is the shape of nuclei, cytoplasm and cells.
    """
    a, b = _check_batch(a, "a"), _check_batch(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"ssim_gray: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if min(a.shape[-2:]) < window_size:
        raise ValueError(f"ssim_gray: images of {tuple(a.shape[-2:])} px are smaller than the {window_size} px window")
    ga, gb = kornia.color.rgb_to_grayscale(a), kornia.color.rgb_to_grayscale(b)
    if blur_sigma > 0:
        k = 2 * math.ceil(3 * blur_sigma) + 1
        ga = kornia.filters.gaussian_blur2d(ga, (k, k), (blur_sigma, blur_sigma), border_type="reflect")
        gb = kornia.filters.gaussian_blur2d(gb, (k, k), (blur_sigma, blur_sigma), border_type="reflect")
    return kornia.metrics.ssim(ga.contiguous(), gb.contiguous(), window_size, max_val=1.0,
                               padding="valid").mean(dim=(1, 2, 3))


def psnr(a: torch.Tensor, b: torch.Tensor, max_val: float = 1.0, eps: float = 1e-10) -> torch.Tensor:
    """Per-image PSNR in dB (B,): ``10 log10(max_val^2 / MSE)`` over all channels and pixels.

    Identical images give ``10 log10(max_val^2 / eps)`` (100 dB with the defaults) instead of infinity.
    """
    a, b = _check_batch(a, "a"), _check_batch(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = (a.double() - b.double()).pow(2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(max_val**2 / (mse + eps))).float()


def lab_pixels(images: torch.Tensor | Sequence[torch.Tensor], n_per_image: int = 1024, seed: int = 0,
               first_index: int = 0) -> torch.Tensor:
    """A deterministic sample of CIE L*a*b* pixels, (N, 3) float: ``n_per_image`` per image, drawn without
    replacement (every pixel when an image has fewer).

    ``images`` is a B x 3 x H x W batch or a list of 3 x H x W tensors (sizes may differ), RGB in [0, 1]. Image ``i``
    draws its pixel positions from a generator seeded by ``(seed, first_index + i)``, so the sample of an image does
    not depend on the other images, and a long list can be sampled batch by batch (``first_index`` = the batch's
    position in the list) with the same result.
    """
    if images is None or (isinstance(images, torch.Tensor) and images.ndim != 4):
        raise ValueError("lab_pixels: pass a B x 3 x H x W batch or a list of 3 x H x W tensors")
    items = list(images) if not isinstance(images, torch.Tensor) else list(images.unbind(0))
    out = []
    for i, image in enumerate(items):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"lab_pixels: image {i} has shape {tuple(image.shape)}, expected 3 x H x W")
        lab = kornia.color.rgb_to_lab(image.float().clamp(0, 1)[None])[0].reshape(3, -1)
        n = lab.shape[1]
        if n > n_per_image:
            state = np.random.SeedSequence([seed, first_index + i]).generate_state(1)[0]
            gen = torch.Generator().manual_seed(int(state))
            idx = torch.randperm(n, generator=gen)[:n_per_image].sort().values
            lab = lab[:, idx.to(lab.device)]
        out.append(lab.T)
    if not out:
        return torch.zeros((0, 3))
    return torch.cat(out).cpu()


def wasserstein_1d_sorted(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact 1D Wasserstein-1 distances between matching rows of two row-sorted arrays (P, N) and (P, M).

    ``W1 = integral over u in (0, 1] of |F_a^-1(u) - F_b^-1(u)|``: the empirical quantile functions are step
    functions that change only at levels i/N and j/M, so the integral is an exact sum over the merged levels (kept
    as integers over lcm(N, M), no rounding).
    """
    n, m = a.shape[1], b.shape[1]
    if n == m:
        return (a - b).abs().mean(dim=1)
    lcm = math.lcm(n, m)
    levels = torch.cat([torch.arange(1, n + 1, dtype=torch.int64) * (lcm // n),
                        torch.arange(1, m + 1, dtype=torch.int64) * (lcm // m)]).unique()  # sorted
    widths = torch.diff(levels, prepend=torch.zeros(1, dtype=torch.int64)).double() / lcm
    ia = (levels * n + lcm - 1) // lcm - 1  # the quantile of a on (previous level, level] is a[ceil(level n) - 1]
    ib = (levels * m + lcm - 1) // lcm - 1
    return ((a[:, ia] - b[:, ib]).abs() * widths.to(a)).sum(dim=1)


def random_directions(dim: int, n_projections: int = 64, seed: int = 0) -> torch.Tensor:
    """(dim, n_projections) float64 unit vectors, Gaussian then normalized, from a generator seeded by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(dim, n_projections, generator=gen, dtype=torch.float64)
    return directions / directions.norm(dim=0, keepdim=True)


def sorted_projections(points: ArrayLike, directions: torch.Tensor) -> torch.Tensor:
    """The points (N, D) projected on each direction and sorted: (n_projections, N) float64."""
    x = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points).double().cpu()
    if x.ndim != 2 or x.shape[1] != directions.shape[0] or not len(x):
        raise ValueError(f"sliced_wasserstein: pass non-empty (N, {directions.shape[0]}) point clouds, got "
                         f"{tuple(x.shape)}")
    return (x @ directions).T.sort(dim=1).values


def sliced_wasserstein(a_pixels: ArrayLike, b_pixels: ArrayLike, n_projections: int = 64, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between two point clouds (N, D) and (M, D), e.g. L*a*b* pixels.

    The clouds are projected on ``n_projections`` random unit directions (:func:`random_directions`: the same
    directions for every call with the same seed and dimension); the result is the mean over directions of the exact
    1D Wasserstein-1 distance (N and M may differ). In the units of the points: for L*a*b* pixels, comparable to a
    colour difference Delta-E. 0 for identical clouds. To compare many clouds with one reference, sort the
    reference's projections once with :func:`sorted_projections` and call :func:`wasserstein_1d_sorted`.
    """
    dim = np.shape(a_pixels)[1] if np.ndim(a_pixels) == 2 else 0
    if np.ndim(a_pixels) != 2 or np.ndim(b_pixels) != 2 or np.shape(b_pixels)[1] != dim:
        raise ValueError(f"sliced_wasserstein: pass two non-empty (N, D) point clouds of the same D, got "
                         f"{tuple(np.shape(a_pixels))} and {tuple(np.shape(b_pixels))}")
    directions = random_directions(dim, n_projections, seed)
    pa, pb = sorted_projections(a_pixels, directions), sorted_projections(b_pixels, directions)
    return float(wasserstein_1d_sorted(pa, pb).mean())


def _covariance(x: np.ndarray, shrinkage: float | str | None) -> np.ndarray:
    if shrinkage in ("ledoit-wolf", "auto"):
        from sklearn.covariance import ledoit_wolf

        return ledoit_wolf(x, assume_centered=False)[0] if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))
    cov = np.cov(x, rowvar=False) if len(x) > 1 else np.zeros((x.shape[1], x.shape[1]))
    cov = np.atleast_2d(cov)
    s = float(shrinkage or 0.0)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"frechet_distance: shrinkage must be in [0, 1] or 'ledoit-wolf' (got {shrinkage!r})")
    if s:
        d = cov.shape[0]
        cov = (1 - s) * cov + s * (np.trace(cov) / d) * np.eye(d)
    return cov


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike, shrinkage: float | str | None = "ledoit-wolf",
                     eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D) and (M, D)::

        |mu_a - mu_b|^2 + Tr(C_a + C_b - 2 sqrtm(C_a C_b))

    This is the FID formula (Heusel et al. 2017) on whatever features are passed. With few samples (N < D) the
    sample covariances are singular and noisy, so by default each covariance is the Ledoit-Wolf shrinkage estimate
    (sklearn: a data-driven blend with a scaled identity that tends to the sample covariance as N grows); pass
    ``shrinkage=0`` for the textbook sample covariance, or a fixed fraction ``s`` for ``(1 - s) C + s tr(C)/D I``.
    Numerics as in pytorch-fid: if ``sqrtm(C_a C_b)`` is not finite, ``eps`` is added to both diagonals and it is
    recomputed; an imaginary part (round-off of a nearly singular product) is dropped; the result is clipped at 0.
    Identical inputs give ~0.
    """
    a = np.asarray(feats_a.detach().cpu() if isinstance(feats_a, torch.Tensor) else feats_a, dtype=np.float64)
    b = np.asarray(feats_b.detach().cpu() if isinstance(feats_b, torch.Tensor) else feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"frechet_distance: pass two non-empty (N, D) feature arrays of the same D, got "
                         f"{a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    # small matrices gain nothing from BLAS threads, and lose a lot when the cores are busy (a 512 x 512 sqrtm:
    # 0.2 s on one thread, 8 s on two threads of two cores shared with a training run)
    single = threadpool_limits(limits=1, user_api="blas") if a.shape[1] <= 1024 else contextlib.nullcontext()
    with single:
        cov_a, cov_b = _covariance(a, shrinkage), _covariance(b, shrinkage)
        covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():
            offset = np.eye(cov_a.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
    return max(value, 0.0)


# -- classification ---------------------------------------------------------------------------------------------
def macro_f1_from_counts(conf: np.ndarray) -> np.ndarray:
    """Macro-F1 of confusion matrices (..., K, K) (rows: true class), over the classes with support:
    the mean of 2 tp / (support + predicted). A prediction of a class absent from the labels only costs recall."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1).astype(float)
    support, predicted = conf.sum(-1).astype(float), conf.sum(-2).astype(float)
    present = support > 0
    f1 = np.where(present, 2 * tp / np.maximum(support + predicted, 1), 0.0)
    return f1.sum(-1) / np.maximum(present.sum(-1), 1)


def macro_f1(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Mean F1 over the classes present in ``y_true`` (non-negative class indices); NaN without labels."""
    t, p = np.asarray(y_true, np.int64).ravel(), np.asarray(y_pred, np.int64).ravel()
    if t.size == 0:
        return float("nan")
    k = int(max(t.max(), p.max())) + 1
    conf = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    return float(macro_f1_from_counts(conf))
