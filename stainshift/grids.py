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
