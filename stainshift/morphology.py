"""What a white cell looks like, in numbers: its size and outline, its nucleus-to-cytoplasm ratio, the texture and
colour of its nucleus and the colour of its cytoplasm, measured from a segmentation of the image.

The segmentation is :func:`stainshift.data.stats.segment_cell_regions` (colour thresholds), used for every image
alike, real or generated, so that a difference between two images is never a difference between two segmenters.
Where a domain has masks, :func:`mask_agreement` says how well those thresholds match them.

    >>> cell = measure(image)                       # CellMeasures or None (no cell found)
    >>> table = measure_all(images)                 # one row per image, NaN where no cell was found
    >>> iou = outline_iou(before, after)            # how much of the outline a translation kept
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np

from stainshift.data.stats import equivalent_diameter, segment_cell_regions, to_lab

# what a class translation should move toward the target class (the rest describes size and outline, to be kept)
MOVED = ("nc_ratio", "nucleus_texture", "nucleus_L", "nucleus_a", "nucleus_b", "cytoplasm_L", "cytoplasm_a",
         "cytoplasm_b")


@dataclass(frozen=True)
class CellMeasures:
    """One cell. Colours are CIE L*a*b* means; ``nucleus_texture`` is the standard deviation of L* inside the
    nucleus (chromatin pattern); ``solidity`` is the cell's area over its convex hull's (1 for a convex outline)."""

    diameter: float          # equivalent-circle diameter of the cell, px
    nc_ratio: float          # nucleus area / cell area
    solidity: float
    nucleus_texture: float
    nucleus_L: float
    nucleus_a: float
    nucleus_b: float
    cytoplasm_L: float
    cytoplasm_a: float
    cytoplasm_b: float

    def vector(self, keys: Sequence[str] = MOVED) -> np.ndarray:
        return np.array([getattr(self, k) for k in keys], dtype=np.float64)


FEATURES = tuple(f.name for f in fields(CellMeasures))


def _solidity(cell: np.ndarray) -> float:
    contours, _ = cv2.findContours(cell.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return float("nan")
    hull = cv2.convexHull(np.concatenate(contours))
    hull_area = cv2.contourArea(hull)
    return float(cell.sum() / hull_area) if hull_area > 0 else float("nan")


def measure_regions(image: np.ndarray, cell: np.ndarray, nucleus: np.ndarray) -> CellMeasures | None:
    """The measures of a cell given its (boolean) cell and nucleus masks; None for an empty cell or nucleus."""
    cell = cell.astype(bool)
    nucleus = nucleus.astype(bool) & cell
    cytoplasm = cell & ~nucleus
    if cell.sum() == 0 or nucleus.sum() == 0:
        return None
    lab = to_lab(image)
    nuc = lab[nucleus]
    cyto = lab[cytoplasm] if cytoplasm.any() else np.full((1, 3), np.nan)
    return CellMeasures(
        diameter=equivalent_diameter(float(cell.sum())), nc_ratio=float(nucleus.sum() / cell.sum()),
        solidity=_solidity(cell), nucleus_texture=float(nuc[:, 0].std()),
        nucleus_L=float(nuc[:, 0].mean()), nucleus_a=float(nuc[:, 1].mean()), nucleus_b=float(nuc[:, 2].mean()),
        cytoplasm_L=float(np.mean(cyto[:, 0])), cytoplasm_a=float(np.mean(cyto[:, 1])),
        cytoplasm_b=float(np.mean(cyto[:, 2])))


def measure(image: np.ndarray) -> CellMeasures | None:
    """The central white cell of an RGB uint8 image, or None when the segmentation finds none."""
    regions = segment_cell_regions(image)
    return None if regions is None else measure_regions(image, *regions)


def measure_all(images: Iterable[np.ndarray]) -> np.ndarray:
    """An (N, len(FEATURES)) table of :class:`CellMeasures`, NaN rows where no cell was found."""
    rows = []
    for image in images:
        found = measure(image)
        rows.append([np.nan] * len(FEATURES) if found is None else list(asdict(found).values()))
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURES))


def outline_iou(before: np.ndarray, after: np.ndarray) -> float:
    """Intersection over union of the cells segmented in two images of the same size (NaN when either has none)."""
    a, b = segment_cell_regions(before), segment_cell_regions(after)
    if a is None or b is None:
        return float("nan")
    union = (a[0] | b[0]).sum()
    return float((a[0] & b[0]).sum() / union) if union else float("nan")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (NaN when both are empty)."""
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else float("nan")


def mask_agreement(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Dice of the threshold segmentation with a site mask (0 background, ~128 cytoplasm, 255 nucleus): (cell,
    nucleus); NaN when the thresholds find no cell."""
    regions = segment_cell_regions(image)
    if regions is None:
        return float("nan"), float("nan")
    if mask.shape[:2] != image.shape[:2]:
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    return dice(regions[0], mask > 64), dice(regions[1], mask > 192)
