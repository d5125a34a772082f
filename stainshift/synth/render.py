"""Synthetic masks rendered into stained images with the simulator's hospital protocols.

A :class:`~stainshift.synth.masks.SyntheticMask` becomes one stain concentration map per stain
(:data:`~stainshift.data.simulate.STAINS`), drawn the way :func:`~stainshift.data.simulate.make_cell` draws its
cells (chromatin texture in the nucleus, class-specific cytoplasm and granules, red cells with a central pallor,
a few platelets), and is then photographed by :func:`~stainshift.data.simulate.render_concentrations`
(Beer-Lambert stain, illumination, vignetting, focus blur, noise, JPEG).

    >>> db = simulator_database()
    >>> mask = compose(db, MaskSpec((640, 480)), np.random.default_rng(0))
    >>> image = render_mask(mask, "clinic", np.random.default_rng(1), white_px=db.diameter())
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

from stainshift.data.simulate import (
    _CELL_PARAMS,
    FIELD_UM,
    STAINS,
    HospitalProtocol,
    _blob,
    _noise,
    render_concentrations,
)
from stainshift.errors import StainshiftError
from stainshift.synth.masks import INSTANCE_STRIDE, RED_CLASS_ID, SEMANTIC, SyntheticMask

_NUC, _CYT, _FINE, _EOS, _BASO, _RBC = (STAINS.index(s) for s in (
    "nucleus", "cytoplasm", "fine_granules", "eosinophil_granules", "basophil_granules", "red_cells"))
_SIM_PX_PER_UM = 96 / FIELD_UM  # the scale the protocols' blur is given at
# median equivalent diameter of the simulator's white cells (simulator_database(): 40.05 px at 3 px/um), so
# ``white_px = db.diameter()`` of a simulator database renders at the simulator's own scale
_WHITE_UM = 13.35
# (chromatin texture amplitude, texture scale in um, nucleus strength) of a class the simulator does not know
_DEFAULT_NUCLEUS = (0.18, 0.9, 1.0)
# granules per um^2 of the region they fill, as make_cell places them (3 * count candidates over its field)
_GRANULE_DENSITY = {"neutrophil": 1.57, "eosinophil": 0.89, "basophil": 0.60}
_PLATELETS_PER_UM2 = 0.6 / FIELD_UM ** 2


def render_mask(mask: SyntheticMask, hospital: str | HospitalProtocol, rng: np.random.Generator,
                white_px: float) -> np.ndarray:
    """Image (H, W, 3) uint8 of ``mask`` stained and photographed under ``hospital``'s protocol.

    ``white_px`` is the typical white-cell diameter (pixels) of the mask: it sets the scale of the chromatin
    texture, the granules, the edges and the focus blur (the simulator's cells are about 40 px, 3 px/um).
    Deterministic given ``rng``.
    """
    if not (isinstance(white_px, int | float | np.floating | np.integer) and math.isfinite(white_px)
            and white_px > 0):
        raise StainshiftError(f"white_px={white_px!r}: pass the white-cell diameter in pixels (> 0)")
    px = float(white_px) / _WHITE_UM  # pixels per micrometre
    conc = _concentrations(mask, rng, px)
    return render_concentrations(conc, hospital, rng, blur_scale=px / _SIM_PX_PER_UM)


# ---------------------------------------------------------------------------------------------------------------
# Concentration maps


def _soft(hard: np.ndarray, sigma: float) -> np.ndarray:
    """A 0/1 map with soft (~1 px, Gaussian ``sigma``) edges, float32 in 0..1."""
    out = hard.astype(np.float32)
    return cv2.GaussianBlur(out, (0, 0), sigma) if sigma > 0.05 else out


def _outline(hard: np.ndarray, smooth: float, ramp: float) -> np.ndarray:
    """A 0/1 map whose staircase outline is smoothed (Gaussian ``smooth`` px, cut at 0.5), with an anti-aliased
    edge ``ramp`` px wide: the smooth outlines of make_cell's polygons from a nearest-neighbour mask."""
    blurred = cv2.GaussianBlur(hard.astype(np.float32), (0, 0), smooth)
    slope = np.float32(smooth * math.sqrt(2.0 * math.pi) / ramp)
    return np.clip((blurred - 0.5) * slope + 0.5, 0.0, 1.0)


def _smooth(px: float) -> float:
    """Gaussian (pixels) that smooths a mask's staircase outlines: ~0.8 px, never below 0.7 (thin bridges of
    one pixel survive the cut at 0.5)."""
    return max(0.7, 0.27 * px)


def _granules(rng: np.random.Generator, region: np.ndarray, per_px: float, radius_px: float) -> np.ndarray:
    """Round granules at random pixels of ``region`` (bool), ``per_px`` per pixel of it; peak about 1."""
    field = np.zeros(region.shape, np.float32)
    where = np.flatnonzero(region)
    count = int(rng.poisson(per_px * len(where))) if len(where) else 0
    if count:
        picks = where[rng.integers(0, len(where), count)]
        np.add.at(field.reshape(-1), picks, rng.uniform(0.7, 1.3, count).astype(np.float32))
    sigma = max(radius_px, 0.35)
    return cv2.GaussianBlur(field, (0, 0), sigma) * np.float32(2.0 * np.pi * sigma * sigma)


def _spots(rng: np.random.Generator, region: np.ndarray, count: int, radius_px: tuple[float, float]) -> np.ndarray:
    """``count`` anti-aliased discs centred on random pixels of ``region`` (bool), float32 0..1."""
    canvas = np.zeros(region.shape, np.uint8)
    ys, xs = np.nonzero(region)
    if not len(ys):
        return canvas.astype(np.float32)
    for k in rng.integers(0, len(ys), count):
        r = rng.uniform(*radius_px)
        cv2.circle(canvas, (int(xs[k]) * 16 + 8, int(ys[k]) * 16 + 8), max(1, round(r * 16)), 255, -1,
                   cv2.LINE_AA, 4)
    return canvas.astype(np.float32) * (1.0 / 255.0)


def _concentrations(mask: SyntheticMask, rng: np.random.Generator, px: float) -> np.ndarray:
    instance, semantic = mask.instance, mask.semantic
    if instance.shape != semantic.shape or instance.ndim != 2:
        raise StainshiftError(f"mask maps disagree: instance {instance.shape}, semantic {semantic.shape}")
    h, w = instance.shape
    conc = np.zeros((len(STAINS), h, w), np.float32)
    edge = max(0.5, 0.2 * px)  # ~0.6 px at 3 px/um: like the simulator's ~1 px anti-aliased outlines
    margin = math.ceil(3 * max(edge, _smooth(px))) + 1
    for rec in mask.cells:
        if rec.instance // INSTANCE_STRIDE != RED_CLASS_ID:
            _white_cell(conc, instance, semantic, rec.instance, rec.cls, rec.bbox, margin, edge, rng, px)
    red = semantic == SEMANTIC["red_cell"]
    if red.any():
        conc[_RBC] = _red_cells(instance, red, rng, edge, _smooth(px))
    _platelets(conc, semantic, rng, px)
    return conc


def _white_cell(conc: np.ndarray, instance: np.ndarray, semantic: np.ndarray, ident: int, cls: str,
                bbox: tuple[int, int, int, int], margin: int, edge: float, rng: np.random.Generator,
                px: float) -> None:
    """Add one white cell's stains (make_cell's recipe for its class) to ``conc`` inside its box."""
    h, w = instance.shape
    x, y, bw, bh = bbox
    y0, y1, x0, x1 = max(0, y - margin), min(h, y + bh + margin), max(0, x - margin), min(w, x + bw + margin)
    mine = instance[y0:y1, x0:x1] == ident
    nuc_hard = mine & (semantic[y0:y1, x0:x1] == SEMANTIC["nucleus"])
    body = _outline(mine, _smooth(px), 2.0 * edge)
    nucleus = np.minimum(_soft(nuc_hard, edge), body)
    cyto = np.clip(body - nucleus, 0.0, 1.0)
    cyto_hard = mine & ~nuc_hard
    shape = mine.shape

    if cls in _CELL_PARAMS:
        _, nuc_strength, tex_amp, tex_um = _CELL_PARAMS[cls]
    else:
        tex_amp, tex_um, nuc_strength = _DEFAULT_NUCLEUS
    chromatin = np.maximum(1.0 + tex_amp * _noise(rng, shape, tex_um * px), 0.4)
    c = {s: np.zeros(shape, np.float32) for s in (_NUC, _CYT, _FINE, _EOS, _BASO)}
    c[_NUC] = nucleus * nuc_strength * chromatin * np.float32(rng.uniform(0.92, 1.08))
    per_px = _GRANULE_DENSITY.get(cls, 0.0) / (px * px)

    if cls == "neutrophil":
        c[_CYT] = cyto * 0.08
        c[_FINE] = cyto * (0.45 + 0.35 * _granules(rng, cyto_hard, per_px, 0.2 * px))
    elif cls == "eosinophil":
        c[_FINE] = cyto * 0.15
        grains = _granules(rng, mine, per_px, 0.28 * px)
        c[_EOS] = np.minimum(cyto * (0.35 + 0.9 * grains), 1.6) + nucleus * 0.3 * grains
    elif cls == "basophil":
        c[_CYT] = cyto * 0.15
        c[_FINE] = cyto * 0.3
        c[_BASO] = np.minimum(body * _granules(rng, mine, per_px, 0.42 * px), 1.3)
    elif cls == "lymphocyte":
        c[_CYT] = cyto * np.float32(rng.uniform(0.8, 1.1))
    elif cls == "monocyte":
        vacuoles = _spots(rng, cyto_hard, int(rng.integers(1, 7)), (0.35 * px, 0.8 * px))
        keep = 1.0 - 0.85 * vacuoles
        c[_CYT] = cyto * keep * (0.38 + 0.06 * _noise(rng, shape, 1.5 * px))
        c[_FINE] = cyto * keep * 0.45
    elif cls == "blast":
        c[_CYT] = cyto * np.float32(rng.uniform(1.0, 1.25))
        # nucleoli: pale spots well inside the nucleus
        inner = ndimage.distance_transform_edt(nuc_hard) > 0.9 * px
        spot = _spots(rng, inner if inner.any() else nuc_hard, int(rng.integers(1, 4)), (0.55 * px, 0.9 * px))
        spot *= nucleus
        c[_NUC] *= 1.0 - 0.6 * spot
        c[_CYT] += 0.6 * spot
    else:  # a class the simulator does not know: plain cytoplasm
        c[_CYT] = cyto * 0.6
    for s, v in c.items():
        conc[s, y0:y1, x0:x1] += v


def _red_cells(instance: np.ndarray, red: np.ndarray, rng: np.random.Generator, edge: float, smooth: float
               ) -> np.ndarray:
    """Red-cell stain: each cell denser at the rim, with a central pallor, touching cells kept apart."""
    h, w = instance.shape
    ids = np.unique(instance[red]).astype(np.int64)
    # pad by replication (about a cell radius) so that a cell cut by the image border keeps its pallor nearer
    # where its centre would be
    pad = min(64, math.ceil(math.sqrt(np.count_nonzero(red) / (len(ids) * math.pi))) + 2)
    inst = cv2.copyMakeBorder(np.where(red, instance, 0).astype(np.int32), pad, pad, pad, pad,
                              cv2.BORDER_REPLICATE)
    inside = inst > 0
    # pixels next to a different instance (or background) are the cells' outlines: distance 0 there
    boundary = np.zeros_like(inside)
    boundary[:, :-1] |= inst[:, :-1] != inst[:, 1:]
    boundary[:, 1:] |= inst[:, 1:] != inst[:, :-1]
    boundary[:-1] |= inst[:-1] != inst[1:]
    boundary[1:] |= inst[1:] != inst[:-1]
    core = (inside & ~boundary).astype(np.uint8)
    dist = cv2.distanceTransform(core, cv2.DIST_L2, 5) + inside.astype(np.float32) * 0.5
    peak = ndimage.maximum(dist, labels=inst, index=ids)
    lut_peak = np.ones(int(ids.max()) + 1, np.float32)
    lut_peak[ids] = np.maximum(np.asarray(peak, np.float32), 1.0)
    n = len(ids)
    lut_depth = np.zeros_like(lut_peak)
    lut_density = np.zeros_like(lut_peak)
    lut_depth[ids] = (0.45 + 0.25 * rng.uniform(0.0, 1.0, n)).astype(np.float32)
    lut_density[ids] = (0.85 + 0.25 * rng.uniform(0.0, 1.0, n)).astype(np.float32)
    sl = (slice(pad, pad + h), slice(pad, pad + w))
    inst, dist = inst[sl], dist[sl]
    d = 1.0 - dist / lut_peak[inst]  # 0 at a cell's centre, 1 at its rim (make_cell's normalised radius)
    pallor = 1.0 - lut_depth[inst] * np.exp(-((d * (1 / 0.45)) ** 2))
    density = (lut_density[inst] * pallor * red).astype(np.float32)
    # the values carried ~1 px outwards (a normalised blur), cut by the smoothed, anti-aliased outline
    density = cv2.GaussianBlur(density, (0, 0), smooth) / np.maximum(_soft(red, smooth), np.float32(1e-3))
    return np.minimum(density * _outline(red, smooth, 2.0 * edge), 1.8)


def _platelets(conc: np.ndarray, semantic: np.ndarray, rng: np.random.Generator, px: float) -> None:
    """A few platelets (small nucleus-stained blobs) in the free background, as make_cell scatters them."""
    h, w = semantic.shape
    count = int(rng.poisson(_PLATELETS_PER_UM2 * h * w / (px * px)))
    if not count:
        return
    canvas = np.zeros((h, w), np.uint8)
    for x, y in rng.uniform(0.0, 1.0, (count, 2)) * (w, h):
        poly = _blob(rng, (float(x), float(y)), rng.uniform(0.6, 1.1) * px, irregular=0.15)
        if semantic[min(int(y), h - 1), min(int(x), w - 1)] == SEMANTIC["background"]:
            cv2.fillPoly(canvas, [poly], 255, cv2.LINE_AA, 4)
    conc[_NUC] += canvas.astype(np.float32) * (0.6 / 255.0)
