"""Finding the white cells in a whole smear field.

White-cell nuclei are the bluest objects of a Romanowsky-stained field ((B - G) / (R + G + B), as in
:func:`stainshift.data.stats.segment_cell`). The locator thresholds that blueness (Otsu), joins a nucleus's lobes
(components closer than half a nucleus), drops groups much smaller than the largest one (platelets, debris), and
outlines each cell with the single-cell segmentation run on a window around its nucleus.

    >>> boxes = locate_cells(read_image("field.jpg"))      # [CellBox(x, y, w, h, ...), ...]
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stainshift.data.stats import _MIN_NUCLEUS_CONTRAST, _disk, _open, _otsu, equivalent_diameter, segment_cell

MIN_GROUP_FRACTION = 0.25  # a nucleus group smaller than this share of the field's largest is not a white cell
WINDOW = 1.5  # the window segmented around a nucleus reaches this many nucleus extents beyond it on each side


@dataclass(frozen=True)
class CellBox:
    """One located white cell: its box (x, y, w, h) in field pixels, its nucleus area and whether the box is
    the segmented cell's (True) or the nucleus's, widened (False: the segmentation found no cell)."""

    x: int
    y: int
    w: int
    h: int
    nucleus_area: int
    segmented: bool

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2.0, self.y + self.h / 2.0

    def square(self, side: float) -> tuple[int, int, int, int]:
        """A ``side``-pixel square around the centre (x, y, w, h), for cropping at a common scale."""
        cx, cy = self.centre
        s = max(1, round(side))
        return round(cx - s / 2), round(cy - s / 2), s, s


def nucleus_groups(image: np.ndarray) -> list[np.ndarray]:
    """Boolean masks of the field's nucleus groups (a cell's lobes together), largest first."""
    h, w = image.shape[:2]
    size = min(h, w)
    smooth = cv2.GaussianBlur(image, (0, 0), max(0.8, size / 300))
    f = smooth.astype(np.float32)
    blue = (f[..., 2] - f[..., 1]) / (f.sum(axis=2) + 1.0)
    if np.ptp(blue) < _MIN_NUCLEUS_CONTRAST:
        return []
    nucleus = _open(blue > _otsu(blue, -0.5, 0.5), size / 200)
    if nucleus.sum() < 2e-4 * h * w or nucleus.mean() > 0.5:
        return []
    if blue[nucleus].mean() - blue[~nucleus].mean() < _MIN_NUCLEUS_CONTRAST:
        return []
    n, _, stats, _ = cv2.connectedComponentsWithStats(nucleus.astype(np.uint8), connectivity=8)
    if n <= 1:
        return []
    largest = equivalent_diameter(float(stats[1:, cv2.CC_STAT_AREA].max()))
    joined = cv2.dilate(nucleus.astype(np.uint8), _disk(0.25 * largest))  # lobes half a nucleus apart meet
    m, groups = cv2.connectedComponents(joined, connectivity=8)
    masks = [(groups == k) & nucleus for k in range(1, m)]
    areas = [int(g.sum()) for g in masks]
    top = max(areas)
    keep = [g for g, a in sorted(zip(masks, areas, strict=True), key=lambda t: -t[1]) if a >= MIN_GROUP_FRACTION * top]
    return keep


def locate_cells(image: np.ndarray) -> list[CellBox]:
    """The white cells of a field, largest nucleus first."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    h, w = image.shape[:2]
    out = []
    for group in nucleus_groups(image):
        ys, xs = np.nonzero(group)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        extent = max(y1 - y0, x1 - x0)
        pad = round(WINDOW * extent)
        wy0, wy1, wx0, wx1 = max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)
        cell = segment_cell(image[wy0:wy1, wx0:wx1])
        if cell is not None and cell[group[wy0:wy1, wx0:wx1]].mean() > 0.5:
            cys, cxs = np.nonzero(cell)
            box = (wx0 + cxs.min(), wy0 + cys.min(), cxs.max() - cxs.min() + 1, cys.max() - cys.min() + 1)
            out.append(CellBox(*map(int, box), int(group.sum()), True))
        else:  # no outline found: the nucleus box, widened by the median cytoplasm rim of single-cell masks
            grow = round(0.25 * extent)
            bx0, by0 = max(0, x0 - grow), max(0, y0 - grow)
            bx1, by1 = min(w, x1 + grow), min(h, y1 + grow)
            out.append(CellBox(int(bx0), int(by0), int(bx1 - bx0), int(by1 - by0), int(group.sum()), False))
    return out
