"""Stain augmentation for classifier training: the cheap competitor to harmonization.

    >>> jitter = stain_augmenter("hed")                          # Tellez et al. 2018, sigma 0.05
    >>> randstain = stain_augmenter("lab", target_images)        # RandStainNA (Shen et al. 2022), L*a*b* only
    >>> out = jitter(image, np.random.default_rng(0))            # HxWx3 uint8 in, HxWx3 uint8 out

``hed``: the image's optical density ``-ln(RGB)`` is unmixed into haematoxylin, eosin and DAB with Ruifrok and
Johnston's matrix (skimage's ``hed_from_rgb``; the natural-log optical density of skimage < 0.19, which Tellez et al.
used); each stain channel becomes ``alpha * c + beta`` with ``alpha ~ U(1 - sigma, 1 + sigma)`` and
``beta ~ U(-sigma, sigma)``, and is mixed back. Concentrations are not clipped at zero, so ``sigma = 0`` gives the
image back.

``lab``: fitted on the target domain's training images (at most :data:`LAB_FIT_IMAGES`, evenly spaced), a Normal
per channel for the per-image L*a*b* means and one for the per-image standard deviations. Each draw samples a mean
and a standard deviation per channel and moves the image there (Reinhard: ``(x - mu) / sd * sd_new + mu_new``).
Colour conversions use OpenCV's float L*a*b* (L 0..100).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import cv2
import numpy as np

from stainshift.data.stats import to_lab
from stainshift.errors import DataError, StainshiftError

AUGMENTS = ("hed", "lab")
HED_SIGMA = 0.05
LAB_FIT_IMAGES = 200
MIN_STD = 0.5  # floor for per-channel standard deviations (flat channels, draws from the Normal's tail)
# Ruifrok & Johnston (2001) optical-density vectors, rows haematoxylin, eosin, DAB (skimage.color.rgb_from_hed)
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)

T = TypeVar("T")
Augmenter = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def evenly_spaced(items: Sequence[T], n: int) -> list[T]:
    """At most ``n`` of ``items``, evenly spaced from the first to the last (all of them when there are <= n)."""
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise StainshiftError(f"stain augmentation takes HxWx3 uint8 images, got {image.dtype} {image.shape}")


@dataclass(frozen=True)
class HedJitter:
    """HED colour jitter (Tellez et al. 2018): per stain ``alpha * c + beta``."""

    sigma: float = HED_SIGMA

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_image(image)
        alpha = rng.uniform(1 - self.sigma, 1 + self.sigma, 3)
        beta = rng.uniform(-self.sigma, self.sigma, 3)
        # OD @ HED_FROM_RGB gives the stains; scaling, shifting and mixing back fold into one matrix and one offset
        mix = HED_FROM_RGB @ np.diag(alpha) @ RGB_FROM_HED
        shift = beta @ RGB_FROM_HED
        od = -np.log(np.maximum(image.reshape(-1, 3) / 255.0, 1e-6))
        rgb = np.exp(-(od @ mix + shift)) * 255.0
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(image.shape)

    def params(self) -> dict[str, Any]:
        return {"kind": "hed", "sigma": self.sigma}


def lab_mean_std(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel L*a*b* mean and standard deviation of an RGB uint8 image, each of shape (3,)."""
    mean, std = cv2.meanStdDev(to_lab(image))
    return mean.ravel()[:3], std.ravel()[:3]


@dataclass(frozen=True)
class LabJitter:
    """RandStainNA in L*a*b*: Reinhard transfer to a mean and std drawn from the target's fitted Normals."""

    mean_mu: tuple[float, ...]  # per channel (L*, a*, b*): Normal of the per-image means
    mean_sd: tuple[float, ...]
    std_mu: tuple[float, ...]  # Normal of the per-image standard deviations
    std_sd: tuple[float, ...]
    n_images: int

    @classmethod
    def fit(cls, images: Sequence[np.ndarray], max_images: int = LAB_FIT_IMAGES) -> LabJitter:
        """Fit on up to ``max_images`` of ``images`` (evenly spaced), the target domain's training crops."""
        if not len(images):
            raise DataError("the 'lab' stain augmentation needs the target domain's training images to fit on; "
                            "pass at least one image")
        picked = evenly_spaced(images, max_images)
        for image in picked:
            _check_image(image)
        stats = np.array([np.concatenate(lab_mean_std(image)) for image in picked])  # (n, 6): means, stds
        means, stds = stats[:, :3], stats[:, 3:]
        return cls(tuple(means.mean(0).tolist()), tuple(means.std(0).tolist()), tuple(stds.mean(0).tolist()),
                   tuple(stds.std(0).tolist()), len(picked))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_image(image)
        mu_new = rng.normal(self.mean_mu, self.mean_sd)
        sd_new = np.maximum(rng.normal(self.std_mu, self.std_sd), MIN_STD)
        lab = to_lab(image)
        mean, std = (v.ravel()[:3] for v in cv2.meanStdDev(lab))
        gain = (sd_new / np.maximum(std, MIN_STD)).astype(np.float32)
        lab = (lab - mean.astype(np.float32)) * gain + mu_new.astype(np.float32)
        lab[..., 0] = np.clip(lab[..., 0], 0, 100)
        rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
        return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)

    def params(self) -> dict[str, Any]:
        return {"kind": "lab", "mean_mu": list(self.mean_mu), "mean_sd": list(self.mean_sd),
                "std_mu": list(self.std_mu), "std_sd": list(self.std_sd), "n_images": self.n_images}


def stain_augmenter(kind: str, samples: Sequence[np.ndarray] = (), *, sigma: float = HED_SIGMA,
                    max_images: int = LAB_FIT_IMAGES) -> HedJitter | LabJitter:
    """The ``kind`` augmentation (``hed`` | ``lab``) as ``f(image, rng) -> image``.

    ``samples`` are the target domain's training images (HxWx3 uint8, prepared as in training), used by ``lab``
    only; ``sigma`` is the ``hed`` jitter's strength.
    """
    if kind == "hed":
        if not (0 <= sigma < 1):
            raise StainshiftError(f"hed jitter sigma {sigma} must be in [0, 1) (default {HED_SIGMA})")
        return HedJitter(float(sigma))
    if kind == "lab":
        return LabJitter.fit(samples, max_images)
    raise StainshiftError(f"unknown stain augmentation '{kind}'; use one of {', '.join(AUGMENTS)}")
