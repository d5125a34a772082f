"""Image grids for people to look at: before/after rows, written as PNG next to the tables."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def image_grid(rows: Sequence[Sequence[np.ndarray]], cell: int = 128, gap: int = 4,
               row_labels: Sequence[str] | None = None, label_width: int = 110) -> np.ndarray:
    """Tile RGB uint8 images (each resized to ``cell`` x ``cell``) into a white grid with optional row labels."""
    n_cols = max(len(r) for r in rows)
    left = label_width if row_labels else 0
    height = len(rows) * (cell + gap) + gap
    width = left + n_cols * (cell + gap) + gap
    grid = np.full((height, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        y = gap + r * (cell + gap)
        if row_labels:
            text = row_labels[r][:label_width // 8]
            cv2.putText(grid, text, (4, y + cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for c, image in enumerate(row):
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


def harmonized_row(samples: Sequence, folder=None) -> list[np.ndarray]:
    """The samples' images as they came (``folder`` None) or as harmonized into ``folder`` (same relative keys);
    whole fields are cropped to their cell's window."""
    from dataclasses import replace

    from stainshift.data.domains import read_sample

    return [read_sample(s if folder is None else replace(s, path=folder / s.key)) for s in samples]
