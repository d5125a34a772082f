"""What a mask-to-image generator sees: a label map turned into network input channels.

Mask models consume a B x 1 x H x W label map holding the domain's mask values (the sites' value coding:
0 background, about 128 cytoplasm, 255 nucleus; BCCD's masks carry compression noise around these values). The
encoding quantises it into :data:`N_REGIONS` regions with the thresholds of :func:`stainshift.data.io.cell_regions`
and then builds

- ``onehot``: one channel per region, in {-1, 1} (pix2pixHD's label input);
- ``colour``: a colour-coded mask in [-1, 1] (paper 002 feeds colour-coded masks): black background, a pale
  cytoplasm, a dark nucleus;

optionally followed by an edge map (1 where a pixel's region differs from one of its 4 neighbours, pix2pixHD's
instance boundary input) and ``noise`` channels of N(0, 1) (paper 004's mask + noise input). The real sites'
masks label one cell per image and no instance ids, so the edges are region boundaries: touching cells of the
same region would share an edge-free border, which the masks here never contain.

Synthetic mask folders (``stainshift synth masks``) hold a semantic map (0 background, 1 red cell, 2 cytoplasm,
3 nucleus); :func:`semantic_to_values` converts it to the value coding. Red cells become background there,
because no real training mask labels them: the generator paints red cells where its training images had them.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stainshift.errors import DataError
from stainshift.synth.masks import SEMANTIC

N_REGIONS = 3  # background, cytoplasm, nucleus
CYTOPLASM_MIN, NUCLEUS_MIN = 78, 206  # = stainshift.data.io.cell_regions: [78, 205] cytoplasm, > 205 nucleus
VALUE_OF_SEMANTIC = {SEMANTIC["background"]: 0, SEMANTIC["red_cell"]: 0, SEMANTIC["cytoplasm"]: 128,
                     SEMANTIC["nucleus"]: 255}
# bg, cytoplasm, nucleus: black, a pale violet, a dark purple, in [-1, 1] (paper 002 colour-codes its masks but
# publishes no palette; these only need to be distinct)
_COLOURS = torch.tensor([[-1.0, -1.0, -1.0], [0.6, 0.2, 0.8], [-0.4, -0.8, 0.2]])


class MaskInput(StrEnum):
    ONEHOT = "onehot"
    COLOUR = "colour"


def regions(labels: torch.Tensor) -> torch.Tensor:
    """B x 1 x H x W label values -> B x H x W region index (0 background, 1 cytoplasm, 2 nucleus)."""
    x = labels[:, 0]
    return (x >= CYTOPLASM_MIN).long() + (x >= NUCLEUS_MIN).long()


def region_edges(region: torch.Tensor) -> torch.Tensor:
    """B x H x W regions -> B x 1 x H x W float, 1 on both sides of every boundary between 4-neighbours."""
    r = region[:, None].float()
    edge = torch.zeros_like(r)
    dx = (r[..., :, 1:] != r[..., :, :-1]).float()
    dy = (r[..., 1:, :] != r[..., :-1, :]).float()
    edge[..., :, 1:] = torch.maximum(edge[..., :, 1:], dx)
    edge[..., :, :-1] = torch.maximum(edge[..., :, :-1], dx)
    edge[..., 1:, :] = torch.maximum(edge[..., 1:, :], dy)
    edge[..., :-1, :] = torch.maximum(edge[..., :-1, :], dy)
    return edge


def input_channels(mask_input: MaskInput | str, edges: bool, noise_channels: int) -> int:
    """How many channels :func:`encode` returns."""
    return 3 + int(edges) + noise_channels  # onehot (3 regions) and colour (RGB) both have three


def encode(labels: torch.Tensor, mask_input: MaskInput | str = MaskInput.ONEHOT, edges: bool = False,
           noise_channels: int = 0, instances: torch.Tensor | None = None) -> torch.Tensor:
    """The generator input of a label map, in [-1, 1] (noise channels N(0, 1), from torch's global RNG).

    ``instances`` (B x H x W cell ids, optional): the edge channel then also marks where one cell meets another,
    as pix2pixHD's instance edges do, so two touching cells of the same region stay two cells. On the single-cell
    masks the models train on, the cell's outline is already a region boundary, so this adds nothing there."""
    region = regions(labels)
    if MaskInput(mask_input) is MaskInput.ONEHOT:
        parts = [F.one_hot(region, N_REGIONS).permute(0, 3, 1, 2).float() * 2 - 1]
    else:
        parts = [_COLOURS.to(labels.device)[region].permute(0, 3, 1, 2)]
    if edges:
        edge = region_edges(region)
        if instances is not None:
            edge = torch.maximum(edge, region_edges(instances.to(region.device)))
        parts.append(edge * 2 - 1)
    if noise_channels:
        b, _, h, w = labels.shape
        parts.append(torch.randn(b, noise_channels, h, w, device=labels.device))
    return torch.cat(parts, 1)


def semantic_to_values(semantic: np.ndarray) -> np.ndarray:
    """A synthetic semantic map (:data:`SEMANTIC` ids) -> the value-coded uint8 mask the generators read."""
    lut = np.zeros(256, dtype=np.uint8)
    for sem_id, value in VALUE_OF_SEMANTIC.items():
        lut[sem_id] = value
    return lut[semantic.astype(np.uint8)]


def check_label_map(mask: np.ndarray, path: str | Path, fix: str | None = None) -> None:
    """A one-line error for masks a generator would read as empty: class or colour ids instead of values, or 16-bit
    instance ids. ``fix``: what to do instead (default: the advice for ``synth generate --masks``)."""
    fix = fix or ("pass the folder `stainshift synth masks` wrote (its semantic/ is converted) or value-coded masks "
                  "(0 background, 128 cytoplasm, 255 nucleus)")
    if mask.ndim != 2:
        raise DataError(f"{path}: a mask for a generator has one channel (got shape {mask.shape}); save it as an "
                        "8-bit grey PNG with 0 background, 128 cytoplasm, 255 nucleus")
    top = int(mask.max()) if mask.size else 0
    if top > 255:
        raise DataError(f"{path}: mask values reach {top}: this looks like an instance map (16-bit ids); {fix}")
    if 0 < top < CYTOPLASM_MIN:
        raise DataError(f"{path}: mask values reach only {top}, so every pixel reads as background; this looks "
                        f"like class ids (0-3) or a colour-coded mask read as colour ids; {fix}")
