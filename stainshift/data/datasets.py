"""Torch datasets over a domain's saved split, with scale harmonization and a fixed crop size, and the conversions
between HxWx3 uint8 images and float tensors that every step shares.

Training datasets, one per data regime (:class:`stainshift.models.kinds.DataRegime`): :class:`UnpairedCrops`
(source + target crops), :class:`PairedMaskCrops` (an image and its mask, cropped alike) and
:class:`LabelledCrops` (an image and its class index). Each takes a *plan* that fixes every random choice of an
epoch, so an epoch is the same whatever the number of workers and whether training was resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from stainshift.data.domains import Sample, crop_box, read_sample
from stainshift.data.io import read_image, read_mask
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.errors import DataError
from stainshift.project import Project


def rescale(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor`` (area filter when shrinking, bilinear when enlarging)."""
    if abs(factor - 1.0) < 1e-3:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Crop (or reflect-pad) the centre ``size`` x ``size`` window; the cell sits at the centre of these crops."""
    h, w = image.shape[:2]
    pad_y, pad_x = max(0, size - h), max(0, size - w)
    if pad_y or pad_x:
        image = cv2.copyMakeBorder(image, pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2,
                                   cv2.BORDER_REFLECT_101)
        h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size]


def center_crop_tensor(x: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop (reflect pad when smaller) BCHW (or CHW) to ``size`` x ``size``, as :func:`center_crop` does."""
    h, w = x.shape[-2:]
    pad_y, pad_x = max(0, size - h), max(0, size - w)
    if pad_y or pad_x:
        mode = "reflect" if pad_y < h and pad_x < w else "replicate"
        x = torch.nn.functional.pad(x, (pad_x // 2, pad_x - pad_x // 2, pad_y // 2, pad_y - pad_y // 2), mode=mode)
        h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def _read(source: Sample | str | Path) -> np.ndarray:
    return read_sample(source) if isinstance(source, Sample) else read_image(source)


def load_cell(source: Sample | str | Path, scale: float = 1.0, size: int | None = None) -> np.ndarray:
    """Read a sample (its cell's window, for whole fields) or an image file, rescale it by ``scale`` and
    centre-crop it to ``size`` (RGB uint8)."""
    image = rescale(_read(source), scale)
    return center_crop(image, size) if size else image


def rescale_mask(mask: np.ndarray, factor: float) -> np.ndarray:
    """Resize a label map by ``factor`` with nearest-neighbour sampling (labels are never blended)."""
    if abs(factor - 1.0) < 1e-3:
        return mask
    h, w = mask.shape[:2]
    rows = np.minimum(((np.arange(max(1, round(h * factor))) + 0.5) / factor).astype(int), h - 1)
    cols = np.minimum(((np.arange(max(1, round(w * factor))) + 0.5) / factor).astype(int), w - 1)
    return mask[rows[:, None], cols[None, :]]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).div_(255.0)


def mask_tensor(mask: np.ndarray) -> torch.Tensor:
    """HxW integer label map -> 1xHxW float holding the same ids."""
    return torch.from_numpy(np.array(mask, dtype=np.float32))[None]


def to_batch(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Same-size HxWx3 uint8 images -> Bx3xHxW float in [0, 1]."""
    return torch.stack([to_tensor(image) for image in images])


def to_uint8(batch: torch.Tensor) -> list[np.ndarray]:
    """Bx3xHxW float in [0, 1] -> HxWx3 uint8 images (rounded)."""
    return list(batch.float().clamp(0, 1).mul(255).round_().byte().permute(0, 2, 3, 1).cpu().numpy())


class CellDataset(Dataset):
    """Labelled single-cell crops: ``(3xSxS float tensor in [0,1], class index)``.

    With ``augment``: ``augmenter(image, rng)`` (a stain augmentation, optional), then a right-angle rotation and a
    flip, all drawn from the item's generator.
    """

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], size: int, scale: float = 1.0,
                 augment: bool = False,
                 augmenter: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None) -> None:
        unknown = sorted({s.label for s in samples} - set(classes))
        if unknown:
            raise DataError(f"images labelled {unknown} are not among the classes {list(classes)}")
        self.samples = list(samples)
        self.classes = list(classes)
        self.size, self.scale, self.augment, self.augmenter = size, scale, augment, augmenter

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        image = load_cell(sample, self.scale, self.size)
        if self.augment:  # flips and right-angle rotations: cells have no orientation
            rng = np.random.default_rng(torch.randint(0, 2**31 - 1, ()).item())
            if self.augmenter is not None:
                image = self.augmenter(image, rng)
            image = np.rot90(image, k=int(rng.integers(4)))
            if rng.random() < 0.5:
                image = image[:, ::-1]
        return to_tensor(image), self.classes.index(sample.label)


def domain_dataset(project: Project, domain: str, split: str | None, size: int,
                   classes: Sequence[str] | None = None, augment: bool = False) -> CellDataset:
    """A :class:`CellDataset` over ``split`` of ``domain``, rescaled to the project's common cell diameter."""
    samples = samples_in(project, domain, split)
    classes = list(classes) if classes else list(dict.fromkeys(s.label for s in samples))
    return CellDataset(samples, classes, size, scale_factor(project, domain), augment)


def random_crop_flip(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` x ``size`` window (reflect-padded if smaller), random flips and 90-degree turns."""
    h, w = image.shape[:2]
    if h < size or w < size:
        image = center_crop(image, max(size, h, w))
        h, w = image.shape[:2]
    top, left, turns, flip = _window(h, w, size, rng)
    crop = np.rot90(image[top:top + size, left:left + size], k=turns)
    return crop[:, ::-1] if flip else crop


def _window(h: int, w: int, size: int, rng: np.random.Generator) -> tuple[int, int, int, bool]:
    """(top, left, quarter turns, flip) of a random crop, drawn in :func:`random_crop_flip`'s order."""
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return top, left, int(rng.integers(4)), bool(rng.random() < 0.5)


def paired_crop_flip(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The same random window, turns and flip for an image and its mask (both padded by reflection if smaller)."""
    h, w = image.shape[:2]
    if h < size or w < size:
        side = max(size, h, w)
        image = center_crop(image, side)
        pads = ((side - h) // 2, side - h - (side - h) // 2), ((side - w) // 2, side - w - (side - w) // 2)
        mask = np.pad(mask, pads, mode="reflect" if min(h, w) > 1 else "edge")
        h, w = side, side
    top, left, turns, flip = _window(h, w, size, rng)
    out = []
    for array in (image, mask):
        crop = np.rot90(array[top:top + size, left:left + size], k=turns)
        out.append(np.ascontiguousarray(crop[:, ::-1] if flip else crop))
    return out[0], out[1]


def training_factor(shape: tuple[int, ...], scale: float, load_size: int | None) -> float:
    """The resize factor training applies to an image of ``shape``: the domain's ``scale``, or without a common
    cell diameter (``load_size`` set) the one that brings the shorter side to ``load_size``, as the reference does."""
    return load_size / min(shape[:2]) if load_size else scale


def _load_scaled(sample: Sample, scale: float, load_size: int | None) -> tuple[np.ndarray, float]:
    image = read_sample(sample)
    scale = training_factor(image.shape, scale, load_size)
    return rescale(image, scale), scale


class UnpairedCrops(Dataset):
    """One epoch of unpaired training pairs for a translation model.

    ``plan`` lists ``(source index, target index, augmentation seed)``; every random choice comes from the plan, so
    an epoch is the same whatever the number of DataLoader workers and whether training was resumed.
    """

    def __init__(self, src: Sequence[Sample], dst: Sequence[Sample], plan: Sequence[tuple[int, int, int]],
                 crop: int, src_scale: float = 1.0, dst_scale: float = 1.0, load_size: int | None = None) -> None:
        self.src, self.dst, self.plan = list(src), list(dst), list(plan)
        self.crop, self.src_scale, self.dst_scale, self.load_size = crop, src_scale, dst_scale, load_size

    def _load(self, sample: Sample, scale: float) -> np.ndarray:
        return _load_scaled(sample, scale, self.load_size)[0]

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i_src, i_dst, seed = self.plan[index]
        rng = np.random.default_rng(seed)
        src = random_crop_flip(self._load(self.src[i_src], self.src_scale), self.crop, rng)
        dst = random_crop_flip(self._load(self.dst[i_dst], self.dst_scale), self.crop, rng)
        return {"src": to_tensor(src), "dst": to_tensor(dst)}


class UnpairedMaskCrops(UnpairedCrops):
    """Unpaired masks and images: ``{"mask": 1xSxS label ids of a source mask, "image": 3xSxS target crop}``."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i_src, i_dst, seed = self.plan[index]
        rng = np.random.default_rng(seed)
        sample = self.src[i_src]
        mask = crop_box(read_mask(sample.mask), sample.box)
        factor = self.load_size / min(mask.shape[:2]) if self.load_size else self.src_scale  # as its image's
        mask = rescale_mask(mask, factor)
        blank = np.zeros((*mask.shape[:2], 3), np.uint8)  # paired_crop_flip pads and crops like an image
        _, mask = paired_crop_flip(blank, mask, self.crop, rng)
        dst = random_crop_flip(self._load(self.dst[i_dst], self.dst_scale), self.crop, rng)
        return {"mask": mask_tensor(mask), "image": to_tensor(dst)}


class _PlannedCrops(Dataset):
    """One-domain training crops; ``plan`` lists ``(sample index, augmentation seed)``."""

    def __init__(self, samples: Sequence[Sample], plan: Sequence[tuple[int, int]], crop: int, scale: float = 1.0,
                 load_size: int | None = None) -> None:
        self.samples, self.plan = list(samples), list(plan)
        self.crop, self.scale, self.load_size = crop, scale, load_size

    def __len__(self) -> int:
        return len(self.plan)

    def _item(self, index: int) -> tuple[Sample, np.ndarray, float, np.random.Generator]:
        """The planned sample, its scaled image, the factor used and the item's random generator."""
        i, seed = self.plan[index]
        sample = self.samples[i]
        image, factor = _load_scaled(sample, self.scale, self.load_size)
        return sample, image, factor, np.random.default_rng(seed)


class PairedMaskCrops(_PlannedCrops):
    """Images with their own masks: ``{"image": 3xSxS, "mask": 1xSxS label ids}``, cropped and turned alike."""

    def __init__(self, samples: Sequence[Sample], plan: Sequence[tuple[int, int]], crop: int, scale: float = 1.0,
                 load_size: int | None = None) -> None:
        missing = [s.key for s in samples if s.mask is None]
        if missing:
            raise DataError(f"{len(missing)} images have no mask (first: {missing[0]}); a paired-mask model needs "
                            "a mask for every training image")
        super().__init__(samples, plan, crop, scale, load_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample, image, factor, rng = self._item(index)
        mask = rescale_mask(crop_box(read_mask(sample.mask), sample.box), factor)
        if mask.shape != image.shape[:2]:
            raise DataError(f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} px after scaling, its image "
                            f"{image.shape[1]}x{image.shape[0]}; masks must have their image's size")
        image, mask = paired_crop_flip(image, mask, self.crop, rng)
        return {"image": to_tensor(image), "mask": mask_tensor(mask)}


class LabelledCrops(_PlannedCrops):
    """Labelled images of one domain: ``{"image": 3xSxS, "label": class index}``, randomly cropped and turned."""

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], plan: Sequence[tuple[int, int]],
                 crop: int, scale: float = 1.0, load_size: int | None = None) -> None:
        super().__init__(samples, plan, crop, scale, load_size)
        self.classes = list(classes)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample, image, _, rng = self._item(index)
        return {"image": to_tensor(random_crop_flip(image, self.crop, rng)),
                "label": torch.tensor(self.classes.index(sample.label))}
