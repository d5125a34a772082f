"""Image grids for people to look at: before/after rows, written as PNG next to the tables."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def image_grid(rows: Sequence[Sequence[np.ndarray | None]], cell: int = 128, gap: int = 4,
               row_labels: Sequence[str] | None = None, label_width: int = 110,
               col_labels: Sequence[str] | None = None) -> np.ndarray:
    """Tile RGB uint8 images (each resized to ``cell`` x ``cell``; None leaves the place blank) into a white grid
    with optional row labels (left) and column labels (a header line)."""
    n_cols = max(len(r) for r in rows)
    left = label_width if row_labels else 0
    top = 20 if col_labels else 0
    height = top + len(rows) * (cell + gap) + gap
    width = left + n_cols * (cell + gap) + gap
    grid = np.full((height, width, 3), 255, np.uint8)
    for c, text in enumerate(col_labels or ()):
        x = left + gap + c * (cell + gap)
        cv2.putText(grid, text[:cell // 8], (x + 2, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for r, row in enumerate(rows):
        y = top + gap + r * (cell + gap)
        if row_labels:
            text = row_labels[r][:label_width // 8]
            cv2.putText(grid, text, (4, y + cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for c, image in enumerate(row):
            if image is None:
                continue
            x = left + gap + c * (cell + gap)
            grid[y:y + cell, x:x + cell] = cv2.resize(np.ascontiguousarray(image), (cell, cell),
                                                      interpolation=cv2.INTER_AREA)
    return grid


def first_test_cells(project, domain: str, per_class: int = 1, classes: Sequence[str] | None = None) -> list:
    """The first ``per_class`` test-split samples of each class: in ``classes`` order (those present) when given,
    else in the order the classes first appear."""
    from stainshift.data.splits import samples_in

    chosen: dict[str, list] = {}
    for s in samples_in(project, domain, "test"):
        if len(chosen.setdefault(s.label, [])) < per_class:
            chosen[s.label].append(s)
    order = [c for c in classes if c in chosen] if classes is not None else list(chosen)
    return [s for c in order for s in chosen[c]]


def centre_crop(image: np.ndarray, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` window (the whole image along an axis shorter than ``side``)."""
    h, w = image.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[y:y + side, x:x + side]


def harmonized_row(samples: Sequence, folder=None) -> list[np.ndarray]:
    """The samples' images as they came (``folder`` None) or as harmonized into ``folder`` (same relative keys);
    whole fields are cropped to their cell's window."""
    from dataclasses import replace

    from stainshift.data.domains import read_sample

    return [read_sample(s if folder is None else replace(s, path=folder / s.key)) for s in samples]
