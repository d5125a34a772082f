"""Shared machinery of the classical normalizers: the :class:`Normalizer` base class and input conversion.

A normalizer is an :class:`torch.nn.Module`. ``fit(target)`` measures the target domain (the hospital whose look
we want) and stores the result in registered buffers, so ``state_dict()`` / ``load_state_dict()`` save and restore
a fitted normalizer and ``.to(device)`` moves it. ``forward(x)`` maps a batch ``(B, 3, H, W)`` of RGB images in
``[0, 1]`` to the target look, one image at a time but with batched tensor operations (statistics are per image,
never mixed across the batch).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Self

import kornia
import numpy as np
import torch
from torch import nn

from stainshift.data.batching import shape_batches
from stainshift.errors import StainshiftError

TargetImages = torch.Tensor | np.ndarray | Sequence[np.ndarray] | Sequence[torch.Tensor]

FIT_CHUNK = 32  # images per batch while fitting (bounds memory on large target domains)
_WHAT = "fit(target)"
# On CPU, forward runs large batches in sub-batches of about this many pixels: the colour conversions and OD maps
# then stay in cache. Measured on 2 EPYC cores, 1 thread: 10-30% faster per image than whole batches of 8 at 256 px.
CPU_CHUNK_PIXELS = 1 << 16


class DegenerateImageWarning(UserWarning):
    """An image gave too little signal for the method (blank, uniform, no stained pixels); a fallback was used."""


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` in [0, 1] -> CIE L*a*b* (D65; L 0..100), kornia's convention."""
    return kornia.color.rgb_to_lab(x)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE L*a*b* -> sRGB clipped to [0, 1], kornia's convention."""
    return kornia.color.lab_to_rgb(lab, clip=True)


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor | np.ndarray):
        return f"{type(obj).__name__} of shape {tuple(obj.shape)} and dtype {obj.dtype}"
    return type(obj).__name__


def _tensor_to_float(t: torch.Tensor, what: str) -> torch.Tensor:
    """A BCHW / CHW tensor (uint8 0..255 or float 0..1) -> BCHW float32."""
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[1] != 3:
        raise StainshiftError(f"{what}: expected RGB images as (B, 3, H, W) or (3, H, W), got {_describe(t)}")
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if not t.is_floating_point():
        raise StainshiftError(f"{what}: expected uint8 (0..255) or float (0..1) pixels, got {t.dtype}")
    t = t.float()
    if t.numel() and (float(t.amax()) > 1.0 + 1e-3 or float(t.amin()) < -1e-3):
        raise StainshiftError(f"{what}: float images must lie in [0, 1] (got {float(t.amin()):.3g}.."
                              f"{float(t.amax()):.3g}); divide uint8 pixels by 255")
    return t.clamp(0.0, 1.0)


def _array_to_float(a: np.ndarray, what: str) -> torch.Tensor:
    """An HxWx3 or NxHxWx3 array (uint8, or float in [0, 1]) -> BCHW float32."""
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[3] != 3:
        raise StainshiftError(f"{what}: expected RGB arrays of shape (H, W, 3) or (N, H, W, 3), got {_describe(a)}")
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # torch.from_numpy warns on read-only arrays
        a = a.copy()
    if a.dtype == np.uint8:
        t = torch.from_numpy(a).permute(0, 3, 1, 2)
        return t.float() / 255.0
    if np.issubdtype(a.dtype, np.floating):
        return _tensor_to_float(torch.from_numpy(a).permute(0, 3, 1, 2), what)
    raise StainshiftError(f"{what}: expected uint8 (0..255) or float (0..1) pixels, got {a.dtype}")


def _as_image(item: Any, what: str) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        return _tensor_to_float(item, what)
    if isinstance(item, np.ndarray):
        return _array_to_float(item, what)
    raise StainshiftError(f"{what}: expected numpy arrays or torch tensors, got {_describe(item)}")


def _n_images(item: torch.Tensor | np.ndarray) -> int:
    return int(item.shape[0]) if item.ndim == 4 else 1


def _image_size(item: torch.Tensor | np.ndarray) -> tuple[int, int]:
    return tuple(item.shape[-2:]) if isinstance(item, torch.Tensor) else tuple(item.shape[-3:-1])


class TargetBatches:
    """The target domain as BCHW float32 batches on ``device``, each holding up to ``chunk`` images of one size.

    Re-iterable and converted lazily: a domain of hundreds of images never sits in memory as floats all at once.
    Accepts a BCHW / CHW tensor (uint8 or float in [0, 1]), an (H, W, 3) or (N, H, W, 3) array, or a list of
    such images (sizes may differ: images are grouped by size; order is irrelevant for fitting).
    """

    def __init__(self, target: TargetImages, device: torch.device, chunk: int = FIT_CHUNK) -> None:
        self.device, self.chunk = device, chunk
        if isinstance(target, torch.Tensor | np.ndarray):
            items = [target]
        elif isinstance(target, Sequence) and not isinstance(target, str | bytes):
            items = list(target)
        else:
            raise StainshiftError(f"{_WHAT}: pass a tensor (B, 3, H, W), an array (N, H, W, 3) or a list of HxWx3 "
                                  f"uint8 images, got {_describe(target)}")
        for item in items:
            if not isinstance(item, torch.Tensor | np.ndarray) or item.ndim not in (3, 4):
                _as_image(item, _WHAT)  # raises with the reason
        items = [item for item in items if min(item.shape) > 0]
        if not items:
            raise StainshiftError(f"{_WHAT}: no target images (or only empty ones); pass at least one RGB image")
        self._batches = [item for item in items if _n_images(item) > 1]  # whole batches, sliced
        self._singles: dict[tuple[int, int], list[torch.Tensor | np.ndarray]] = {}
        for item in items:
            if _n_images(item) == 1:
                self._singles.setdefault(_image_size(item), []).append(item)
        self.count = sum(_n_images(item) for item in items)
        for item in items[:1]:
            _as_image(item, _WHAT)  # fail early on a bad dtype / layout

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[torch.Tensor]:
        for item in self._batches:
            for i in range(0, _n_images(item), self.chunk):
                yield _as_image(item[i:i + self.chunk], _WHAT).to(self.device)
        for group in self._singles.values():
            for i in range(0, len(group), self.chunk):
                yield torch.cat([_as_image(item, _WHAT) for item in group[i:i + self.chunk]]).to(self.device)


class Normalizer(nn.Module):
    """Base class of the classical stain normalizers.

    Subclasses implement ``_fit(batches)`` (a re-iterable :class:`TargetBatches` of BCHW float32 batches of the
    target domain, on the module's device), ``_normalize(x)`` (BCHW float32 in [0, 1] -> same, plus a flag per
    image that took the degenerate-input fallback) and ``_degenerate_reason()``, and keep their fitted state in
    buffers. ``forward`` issues one :class:`DegenerateImageWarning` per call, naming the images.
    """

    name: ClassVar[str] = ""
    fitted: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def device(self) -> torch.device:
        return self.fitted.device

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    def fit(self, target: TargetImages) -> Self:
        """Measure the target domain and keep its statistics; returns ``self``.

        ``target``: a BCHW float tensor in [0, 1], a uint8 tensor (BCHW or CHW), an (N, H, W, 3) uint8 array, or
        a list of HxWx3 uint8 arrays of any sizes. How the images are pooled is documented per method.
        """
        with torch.no_grad():
            self._fit(TargetBatches(target, self.device))
        self.fitted.fill_(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize a batch ``(B, 3, H, W)`` of RGB images in [0, 1]; returns the same shape and dtype in [0, 1]."""
        out, degenerate = self._run(x)
        self._warn(degenerate, "batch", stacklevel=5)  # the caller of module(x): _warn, forward, 2 torch frames
        return out

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` without the warning: the output and the ``(B,)`` fallback flags."""
        if not self.is_fitted:
            raise StainshiftError(f"{type(self).__name__} is not fitted: call .fit(target_images) first "
                                  f"(or load_state_dict() from a fitted one)")
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            raise StainshiftError(f"{type(self).__name__}: expected a batch of RGB images (B, 3, H, W), "
                                  f"got {_describe(x)}")
        dtype = x.dtype if x.is_floating_point() else torch.float32
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            raise StainshiftError(f"{type(self).__name__}: expected float pixels in [0, 1], got {x.dtype}")
        if x.numel() == 0:
            return x.to(dtype), torch.zeros(x.shape[0], dtype=torch.bool)
        x = x.to(device=self.device, dtype=torch.float32 if dtype != torch.float64 else dtype).clamp(0.0, 1.0)
        step = x.shape[0]
        if x.device.type == "cpu":  # cache blocking: sub-batches of ~64k pixels (images are independent)
            step = max(1, CPU_CHUNK_PIXELS // (x.shape[2] * x.shape[3]))
        outs, flags = [], []
        with torch.autocast(device_type=x.device.type, enabled=False):  # logs, eigh, pinv: keep full precision
            for i in range(0, x.shape[0], step):
                out, degenerate = self._normalize(x[i:i + step])
                outs.append(out.clamp(0.0, 1.0).to(dtype))
                flags.append(degenerate)
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), torch.cat(flags)

    def _warn(self, degenerate: torch.Tensor, where: str, stacklevel: int) -> None:
        if bool(degenerate.any()):
            images = degenerate.nonzero().flatten().tolist()
            warnings.warn(f"{self.name}: image(s) {images} of the {where} {self._degenerate_reason()}",
                          DegenerateImageWarning, stacklevel=stacklevel)

    def _fit(self, batches: TargetBatches) -> None:
        raise NotImplementedError

    def _normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized batch and a ``(B,)`` bool flag of the images that took the degenerate-input fallback."""
        raise NotImplementedError

    def _degenerate_reason(self) -> str:
        """What was wrong with the flagged images and what was done instead (the end of the warning)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"fitted={self.is_fitted}"


def normalize_images(normalizer: Normalizer, images: Sequence[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
    """Normalize HxWx3 uint8 images of any sizes; returns uint8 arrays in the same order and sizes.

    Images of the same size are batched together (``batch_size`` at most) on the normalizer's device.
    """
    if batch_size < 1:
        raise StainshiftError(f"batch_size={batch_size}: pass a positive number")
    arrays = [np.asarray(im) for im in images]
    for i, a in enumerate(arrays):
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise StainshiftError(f"normalize_images: image {i} must be an (H, W, 3) uint8 array, got {_describe(a)}")
    out: list[np.ndarray | None] = [None] * len(arrays)
    flags = torch.zeros(len(arrays), dtype=torch.bool)
    with torch.no_grad():
        for indices in shape_batches(arrays, batch_size):
            batch = torch.from_numpy(np.stack([arrays[i] for i in indices])).to(normalizer.device)
            x = batch.permute(0, 3, 1, 2).float() / 255.0
            y, degenerate = normalizer._run(x)
            flags[indices] = degenerate.cpu()
            y8 = (y * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for k, i in enumerate(indices):
                out[i] = np.ascontiguousarray(y8[k])
    normalizer._warn(flags, "list", stacklevel=3)
    return out  # type: ignore[return-value]
