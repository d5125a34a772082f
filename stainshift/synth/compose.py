"""Cell-by-cell composition (paper 002): a whole field from a generator trained on single cells.

The background is generated first from an empty mask over the whole field at once (paper 002 built it from
blocks and found the blocks repeating; generating it in one pass is the improvement its author proposed). Then
each cell of the field's instance map is generated alone, in a window the size of the generator's training crops
centred on the cell (the other cells blanked out of its mask), and pasted onto the background through a feathered
copy of its footprint, so no seam runs along the cell border.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

FEATHER_PX = 2.0  # Gaussian sigma of the paste's alpha edge, px: about one mask-interpolation band of the sites' masks


def _generate(translator: nn.Module, values: np.ndarray, device: torch.device) -> np.ndarray:
    x = torch.from_numpy(values.astype(np.float32))[None, None].to(device)
    with torch.inference_mode():
        y = translator(x)[0].permute(1, 2, 0).float().cpu().numpy()
    return y  # H x W x 3 in [0, 1]


def compose_field(translator: nn.Module, values: np.ndarray, instance: np.ndarray, window: int,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """An RGB uint8 field: generated background, then every instance of ``instance`` generated in a ``window`` px
    window around it (from ``values``, the value-coded mask) and pasted with a feathered footprint."""
    device = torch.device(device)
    h, w = values.shape
    canvas = _generate(translator, np.zeros_like(values), device)
    for ident in np.unique(instance):
        if ident == 0:
            continue
        footprint = instance == ident
        cell = np.where(footprint, values, 0)
        if not cell.any():  # e.g. a red cell: background in the value coding, nothing to paint
            continue
        ys, xs = np.nonzero(footprint)
        side = max(window, int(np.ptp(ys)) + 9, int(np.ptp(xs)) + 9)
        cy, cx = (int(ys.min()) + int(ys.max())) // 2, (int(xs.min()) + int(xs.max())) // 2
        top, left = cy - side // 2, cx - side // 2
        crop = np.pad(cell, side)[top + side: top + 2 * side, left + side: left + 2 * side]  # background past edges
        painted = _generate(translator, crop, device)
        y0, x0 = max(0, top), max(0, left)
        y1, x1 = min(h, top + side), min(w, left + side)
        sub = painted[y0 - top: y1 - top, x0 - left: x1 - left]
        alpha = cv2.GaussianBlur(footprint[y0:y1, x0:x1].astype(np.float32), (0, 0), FEATHER_PX)
        alpha = np.maximum(alpha, footprint[y0:y1, x0:x1])[..., None]  # the cell itself fully, the rim blended
        canvas[y0:y1, x0:x1] = alpha * sub + (1 - alpha) * canvas[y0:y1, x0:x1]
    return np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
