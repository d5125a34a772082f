"""Synthetic instance masks: shapes from the database placed by a layout, with instance, semantic and
colour-coded maps.

Conventions (read by the mask-to-image generators):

- instance map, 16-bit: ``class_id * 1000 + k`` for the k-th cell (k >= 1) of that class, 0 background
  (pix2pixHD's convention); ``class_id`` 1 is the red cell, 2.. the white-cell classes in the database's order;
- semantic map, 8-bit: :data:`SEMANTIC` (0 background, 1 red cell, 2 cytoplasm, 3 nucleus);
- colour-coded map: one hue per class (paper 002), and within a class a shade per cell such that touching
  cells never share a colour (graph colouring of the touching graph).
"""

from __future__ import annotations

import colorsys
import math
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from stainshift.errors import DataError, StainshiftError
from stainshift.synth.placement import N_INIT, Layout, make_placer
from stainshift.synth.shapes import BODY, NUCLEUS, RED_CELL, ShapeDatabase, resize_shape

INSTANCE_STRIDE = 1000
SEMANTIC = {"background": 0, "red_cell": 1, "cytoplasm": 2, "nucleus": 3}
RED_CLASS_ID = 1
MAX_TRIES = 30  # proposals per cell before it is dropped

_BASE_COLOURS = {
    RED_CELL: (220, 70, 70), "neutrophil": (60, 120, 235), "eosinophil": (245, 150, 30),
    "basophil": (150, 60, 210), "lymphocyte": (50, 190, 80), "monocyte": (30, 200, 205),
    "blast": (235, 215, 40),
}


class Overlap(StrEnum):
    FORBID = "forbid"  # a cell never covers another (it may touch)
    ALLOW = "allow"  # later cells lie on top of earlier ones


def class_colour(cls: str, shade: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(body, nucleus) RGB of shade ``shade`` of class ``cls``: each class its own hue, shades darker."""
    base = _BASE_COLOURS.get(cls)
    if base is None:  # any other class: a hue from its name, fixed across runs
        hue = (zlib.crc32(cls.encode()) % 360) / 360.0
        base = tuple(round(255 * v) for v in colorsys.hsv_to_rgb(hue, 0.75, 0.9))
    f = 1.0 - 0.09 * shade
    body = tuple(round(v * f) for v in base)
    nucleus = tuple(round(v * 0.38 * f) for v in base)
    return body, nucleus  # type: ignore[return-value]


@dataclass(frozen=True)
class MaskSpec:
    """What one synthetic mask holds. ``size`` is (width, height). ``red_cells``/``white_cells`` None: drawn
    from the database's field statistics for this size. ``classes``: white-class proportions (None: equal).
    ``crop``: a single-cell crop (one white cell near the centre, red cells around it). ``scale`` scales every
    shape; ``red_px`` sets the red-cell diameter in pixels instead."""

    size: tuple[int, int]
    layout: Layout = Layout.MARKOV
    red_cells: int | None = None
    white_cells: int | None = None
    classes: dict[str, float] | None = None
    overlap: Overlap = Overlap.FORBID
    n_init: int = N_INIT
    colours: int = 6
    scale: float = 1.0
    red_px: float | None = None
    crop: bool = False


@dataclass
class CellRecord:
    instance: int
    cls: str
    bbox: tuple[int, int, int, int]  # x, y, w, h of the visible part
    area: int  # visible pixels
    placed_area: int = 0  # pixels when it was placed (more than ``area`` when a later cell covers part of it)
    shade: int = 0


@dataclass
class SyntheticMask:
    instance: np.ndarray  # uint16 (H, W)
    semantic: np.ndarray  # uint8 (H, W)
    cells: list[CellRecord]
    dropped: int
    categories: dict[int, str]
    colour: np.ndarray = field(default=None)  # type: ignore[assignment]  # uint8 (H, W, 3)

    def count(self, cls: str) -> int:
        return sum(c.cls == cls for c in self.cells)

    def centres(self) -> np.ndarray:
        """(n, 2) centres (y, x) of the visible cells' boxes."""
        return np.asarray([(y + h / 2, x + w / 2) for x, y, w, h in (c.bbox for c in self.cells)], np.float64)


def categories_for(db: ShapeDatabase) -> dict[int, str]:
    """Class ids of this database's masks: 1 red cell, then the white classes in the database's order."""
    return {RED_CLASS_ID: RED_CELL, **{i + 2: c for i, c in enumerate(db.white_classes())}}


def check_spec(db: ShapeDatabase, spec: MaskSpec) -> None:
    """One-line errors for a spec this database cannot draw."""
    w, h = spec.size
    for name, value in (("--scale", spec.scale), ("--red-px", spec.red_px)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise StainshiftError(f"{name} {value}: pass a positive number")
    if spec.n_init < 1:
        raise StainshiftError(f"--n-init {spec.n_init}: pass at least 1 (paper 001 uses 20)")
    if spec.crop:  # the white cell must fit whole
        need, what = db.diameter() * spec.scale, "the median white cell"
    else:
        need = min(s.shape[0] for c in db.white_classes() for s in db.shapes[c]) * spec.scale
        what = "the smallest cell"
    if w < 8 or h < 8 or min(w, h) < need:
        raise StainshiftError(f"mask size {w}x{h} is smaller than one cell ({what} is {need:.0f} px across in "
                              f"database {db.name!r}); pass a larger --size or a smaller --scale")
    for name, n in (("--cells", spec.red_cells), ("--white", spec.white_cells)):
        if n is not None and n < 0:
            raise StainshiftError(f"{name} {n}: pass a count >= 0")
    if spec.classes:
        for cls, p in spec.classes.items():
            if cls == RED_CELL:
                raise StainshiftError(f"--classes {RED_CELL}: --classes sets the white-cell mix; red cells are "
                                      "counted by --cells")
            db.check_class(cls)
            if not (math.isfinite(p) and p >= 0):
                raise StainshiftError(f"class proportion {cls}={p}: proportions must be finite and >= 0")
        if sum(spec.classes.values()) <= 0:
            raise StainshiftError("--classes: the proportions sum to 0; give at least one class a share > 0")
    if spec.colours < 1:
        raise StainshiftError(f"--colours {spec.colours}: pass at least 1 shade per class")


def check_instance_ids(instance: np.ndarray, categories: dict[int, str], where: str | Path) -> None:
    """A one-line error when ``instance`` does not follow ``class_id * 1000 + k`` with a known class id."""
    ids = np.unique(instance)
    ids = ids[ids > 0]
    bad_k = ids[ids % INSTANCE_STRIDE == 0]
    unknown = sorted({int(c) for c in ids // INSTANCE_STRIDE} - set(categories))
    if len(bad_k) or unknown:
        example = int(bad_k[0]) if len(bad_k) else int(ids[np.isin(ids // INSTANCE_STRIDE, unknown)][0])
        raise DataError(f"{where}: instance id {example} does not follow class_id*1000+k (k >= 1, class ids "
                        f"{sorted(categories)}); write masks with `stainshift synth masks` or renumber them")


def _counts(db: ShapeDatabase, spec: MaskSpec, rng: np.random.Generator, white_px: float) -> tuple[int, int]:
    stats = db.field_stats
    if spec.red_cells is not None:
        n_red = spec.red_cells
    else:
        # counts scale with the field's area in cell areas; with --red-px, in red-cell areas of the measured fields
        scale_px = white_px if spec.red_px is None else spec.red_px / stats.red_to_white_diameter
        mean, sd = stats.red_count_for(spec.size, scale_px)
        n_red = max(0, round(rng.normal(mean, sd)))
    if spec.white_cells is not None:
        n_white = spec.white_cells
    elif spec.crop:
        n_white = 1
    else:
        n_white = max(1, int(rng.poisson(stats.white_mean * stats.scale_factor(spec.size, white_px))))
    for name, n in (("red", n_red), ("white", n_white)):
        if n >= INSTANCE_STRIDE:
            raise StainshiftError(f"{n} {name} cells in one mask: instance ids hold at most "
                                  f"{INSTANCE_STRIDE - 1} per class; pass fewer --cells or a smaller --size")
    return n_red, n_white


def compose(db: ShapeDatabase, spec: MaskSpec, rng: np.random.Generator) -> SyntheticMask:
    """One synthetic mask drawn from ``db`` under ``spec`` with the random stream ``rng``."""
    check_spec(db, spec)
    w, h = spec.size
    categories = categories_for(db)
    class_id = {c: k for k, c in categories.items()}
    white = db.white_classes()
    if spec.classes:
        names = [c for c, p in spec.classes.items() if p > 0]
        probs = np.asarray([spec.classes[c] for c in names], np.float64)
    else:
        names, probs = white, np.ones(len(white))
    probs = probs / probs.sum()
    white_px = db.diameter() * spec.scale
    red_scale = spec.scale if spec.red_px is None or RED_CELL not in db.shapes else \
        spec.red_px / db.diameter(RED_CELL)
    n_red, n_white = _counts(db, spec, rng, white_px)
    if RED_CELL not in db.shapes:
        n_red = 0
    kinds = [str(c) for c in rng.choice(names, size=n_white, p=probs)] + [RED_CELL] * n_red
    order = list(rng.permutation(len(kinds))) if not spec.crop else \
        [0, *(1 + rng.permutation(len(kinds) - 1))] if kinds else []
    cell_size = db.diameter(RED_CELL) * red_scale if n_red else white_px

    instance = np.zeros((h, w), np.uint16)
    semantic = np.zeros((h, w), np.uint8)
    spacing = 1.0 if spec.overlap is Overlap.FORBID else 0.3  # allowed overlaps: centres may come closer
    placer = make_placer(spec.layout, h, w, len(kinds), cell_size, rng, spec.n_init, spacing)
    per_class = dict.fromkeys(categories.values(), 0)
    placed_area: dict[int, int] = {}
    dropped = 0
    for idx in order:
        cls = kinds[idx]
        is_red = cls == RED_CELL
        base_shape = db.sample(cls, rng, scale=red_scale if is_red else spec.scale)
        landed = False
        for attempt in range(MAX_TRIES):
            if spec.crop and not is_red and attempt == 0 and not per_class[cls] and idx == order[0]:
                jitter = rng.normal(0.0, 0.04, 2) * (h, w)
                proposal: tuple[float, float, float] | None = (h / 2 + jitter[0], w / 2 + jitter[1], 1.0)
            else:
                proposal = placer.propose(rng)
            if proposal is None:
                break
            y, x, z = proposal
            shape = base_shape if z == 1.0 else resize_shape(base_shape, z)
            window = _window(shape, y, x, h, w)
            if window is None:
                placer.rejected(y, x)
                continue
            (y0, y1, x0, x1), (sy0, sy1, sx0, sx1) = window
            footprint = shape[sy0:sy1, sx0:sx1] > 0
            if spec.overlap is Overlap.FORBID and (instance[y0:y1, x0:x1][footprint] > 0).any():
                placer.rejected(y, x)
                continue
            per_class[cls] += 1
            ident = class_id[cls] * INSTANCE_STRIDE + per_class[cls]
            part = shape[sy0:sy1, sx0:sx1]
            instance[y0:y1, x0:x1][footprint] = ident
            placed_area[ident] = int(footprint.sum())
            sem = semantic[y0:y1, x0:x1]
            if is_red:
                sem[footprint] = SEMANTIC["red_cell"]
            else:
                sem[part == BODY] = SEMANTIC["cytoplasm"]
                sem[part == NUCLEUS] = SEMANTIC["nucleus"]
            placer.placed(y, x, 0.5 * math.sqrt(shape.shape[0] * shape.shape[1]))
            landed = True
            break
        dropped += not landed
    cells = _records(instance, categories)
    for rec in cells:
        rec.placed_area = placed_area[rec.instance]
    mask = SyntheticMask(instance, semantic, cells, dropped, categories)
    mask.colour = colour_coded(mask, spec.colours)
    return mask


def _window(shape: np.ndarray, y: float, x: float, h: int, w: int):
    """Field and shape slices for ``shape`` centred at (y, x), clipped to the field; None when outside."""
    sh, sw = shape.shape
    top, left = round(y - sh / 2), round(x - sw / 2)
    y0, y1, x0, x1 = max(0, top), min(h, top + sh), max(0, left), min(w, left + sw)
    if y0 >= y1 or x0 >= x1:
        return None
    return (y0, y1, x0, x1), (y0 - top, y1 - top, x0 - left, x1 - left)


def _records(instance: np.ndarray, categories: dict[int, str]) -> list[CellRecord]:
    """One record per instance still visible (a cell may be covered when overlaps are allowed)."""
    ids = np.unique(instance)
    ids = ids[ids > 0]
    if not len(ids):
        return []
    from scipy import ndimage

    slices = ndimage.find_objects(instance.astype(np.int32), max_label=int(ids.max()))
    areas = np.bincount(instance.ravel(), minlength=int(ids.max()) + 1)
    out = []
    for ident in ids:
        sl = slices[int(ident) - 1]
        ys, xs = sl
        out.append(CellRecord(int(ident), categories[int(ident) // INSTANCE_STRIDE],
                              (xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start), int(areas[ident])))
    return out


def touching_pairs(instance: np.ndarray) -> np.ndarray:
    """(n, 2) pairs of instance ids whose pixels are 4-neighbours, each pair once, smaller id first."""
    parts = []
    for a, b in ((instance[:, :-1], instance[:, 1:]), (instance[:-1, :], instance[1:, :])):
        edge = (a != b) & (a > 0) & (b > 0)  # compared in uint16; only the few boundary pixels are gathered
        parts.append(np.stack([a[edge], b[edge]], axis=1).astype(np.int64))
    pairs = np.concatenate(parts)
    if not len(pairs):
        return np.zeros((0, 2), np.int64)
    return np.unique(np.sort(pairs, axis=1), axis=0)


def colour_coded(mask: SyntheticMask, colours: int) -> np.ndarray:
    """The colour-coded map; sets each record's ``shade`` (touching cells of a class get different shades).

    Raises when the touching graph needs more than ``colours`` shades in a class.
    """
    import networkx as nx

    pairs = touching_pairs(mask.instance)
    graph = nx.Graph()
    graph.add_nodes_from(c.instance for c in mask.cells)
    same_class = pairs[pairs[:, 0] // INSTANCE_STRIDE == pairs[:, 1] // INSTANCE_STRIDE]
    graph.add_edges_from(map(tuple, same_class.tolist()))
    shade = nx.coloring.greedy_color(graph, strategy="smallest_last") if graph.number_of_nodes() else {}
    needed = max(shade.values(), default=-1) + 1
    if needed > colours:
        raise StainshiftError(f"touching cells need {needed} shades in one class but --colours is {colours}; "
                              f"pass --colours {needed} (or fewer --cells)")
    h, w = mask.instance.shape
    out = np.zeros((h, w, 3), np.uint8)
    lut_body = np.zeros((int(mask.instance.max(initial=0)) + 1, 3), np.uint8)
    lut_nucleus = np.zeros_like(lut_body)
    for rec in mask.cells:
        rec.shade = int(shade.get(rec.instance, 0))
        body, nucleus = class_colour(rec.cls, rec.shade)
        lut_body[rec.instance], lut_nucleus[rec.instance] = body, nucleus
    out[:] = lut_body[mask.instance]
    nuc = mask.semantic == SEMANTIC["nucleus"]
    out[nuc] = lut_nucleus[mask.instance[nuc]]
    return out
