"""Stain-shift simulator: synthetic white-cell images with ground truth, rendered under several hospital protocols.

Each cell is a random morphology stored as one concentration map per stain (:data:`STAINS`). A hospital
(:class:`HospitalProtocol`) turns those maps into an RGB image with a Beer-Lambert model::

    I = I0 * exp(-sum_s c_s * strength_s * od_s)

followed by focus blur, sensor noise and JPEG compression. The same cell id is rendered under every hospital
(identical maps and mask, only the protocol differs), so a stain translation can be scored against ground truth.

    >>> from stainshift.data.simulate import simulate
    >>> table = simulate("sim", hospitals=2, per_class=50)   # sim/<hospital>/<class>/<id>.png, sim/pairs.csv

Randomness: the morphology of cell ``(class, index)`` comes from ``(seed, class, index)`` only; the per-image
staining noise of a hospital from ``(seed, hospital name, class, index)``. Runs are therefore byte-identical for
the same arguments, and cell ``i`` looks the same whatever the number of hospitals or cells rendered.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np
import pandas as pd

from stainshift.atomic import atomic_write_text
from stainshift.data.io import CYTOPLASM, MASK_VALUES, NUCLEUS, write_image, write_mask
from stainshift.errors import StainshiftError

CLASSES: tuple[str, ...] = ("neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte", "blast")
STAINS: tuple[str, ...] = ("nucleus", "cytoplasm", "fine_granules", "eosinophil_granules", "basophil_granules",
                           "red_cells")
_N_STAINS = len(STAINS)
_NUC, _CYT, _FINE, _EOS, _BASO, _RBC = range(_N_STAINS)
FIELD_UM = 32.0  # width of the field of view in micrometres, whatever the image size (3 px/um at 96 px)
MIN_SIZE = 32

Vec3 = tuple[float, float, float]


# ---------------------------------------------------------------------------------------------------------------
# Hospital protocols


@dataclass(frozen=True)
class HospitalProtocol:
    """How one hospital stains and photographs a smear.

    ``od_vectors`` holds one optical-density RGB vector per stain (order of :data:`STAINS`, the OD of unit
    concentration at strength 1); ``strengths`` scales each stain. ``background`` is the illumination I0 (RGB,
    0..255), ``vignetting`` the fractional darkening at the corners, ``blur_sigma`` the focus blur in pixels at a
    96 px image, ``noise_sigma`` the sensor noise (grey levels, at full brightness), ``jpeg_quality`` the
    in-memory JPEG round trip (None: lossless), ``stain_jitter`` the slide-to-slide log-normal spread of the
    strengths and ``light_jitter`` that of the illumination brightness.
    """

    name: str
    od_vectors: tuple[Vec3, ...]
    strengths: tuple[float, ...]
    background: Vec3
    vignetting: float = 0.0
    blur_sigma: float = 0.5
    noise_sigma: float = 1.5
    jpeg_quality: int | None = 95
    stain_jitter: float = 0.05
    light_jitter: float = 0.015
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.od_vectors) != _N_STAINS or len(self.strengths) != _N_STAINS:
            raise StainshiftError(f"hospital {self.name!r}: give one OD vector and one strength per stain "
                                  f"({', '.join(STAINS)})")


_CLINIC = HospitalProtocol(
    name="clinic",
    description="like PBC (Hospital Clinic Barcelona): May-Grunwald-Giemsa, CellaVision; cream-pink background, "
                "purple nuclei, pink red cells",
    od_vectors=(
        (1.10, 1.85, 0.40),  # nucleus: purple
        (0.50, 0.38, 0.10),  # basophilic cytoplasm: pale sky blue
        (0.30, 0.55, 0.22),  # fine neutrophil granules: lilac
        (0.16, 0.66, 0.62),  # eosinophil granules: salmon orange-red
        (1.45, 2.30, 0.75),  # basophil granules: deep purple-black
        (0.20, 0.36, 0.20),  # red cells: pink
    ),
    strengths=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    background=(253.0, 229.0, 203.0),
    vignetting=0.03,
    blur_sigma=0.45,
    noise_sigma=1.5,
    jpeg_quality=92,
)

_HGTP = HospitalProtocol(
    name="hgtp",
    description="like jtsc_tecom (Jiangxi Tecom): rapid stain, Motic camera; yellow background, maroon nuclei, "
                "brownish cytoplasm, faint red cells, softer focus",
    od_vectors=(
        (1.20, 2.55, 0.60),  # nucleus: maroon
        (0.42, 0.60, 0.34),  # cytoplasm: grey-brown
        (0.42, 0.82, 0.60),  # fine granules: tan-brown
        (0.38, 1.05, 0.45),  # eosinophil granules: dusky pink-red
        (1.25, 2.40, 0.55),  # basophil granules: dark maroon
        (0.07, 0.16, 0.20),  # red cells: pale ghosts
    ),
    strengths=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    background=(255.0, 252.0, 168.0),
    vignetting=0.10,
    blur_sigma=1.1,
    noise_sigma=3.0,
    jpeg_quality=75,
    stain_jitter=0.08,
    light_jitter=0.03,
)

_SITE3 = HospitalProtocol(
    name="site3",
    description="like BCCD: Wright-type stain, dim grey illumination, blue-violet nuclei",
    od_vectors=(
        (0.65, 0.80, 0.05),  # nucleus: blue-violet
        (0.45, 0.30, 0.02),
        (0.20, 0.30, 0.08),
        (0.10, 0.55, 0.40),
        (0.85, 1.00, 0.15),
        (0.10, 0.25, 0.22),
    ),
    strengths=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
    background=(203.0, 204.0, 203.0),
    vignetting=0.06,
    blur_sigma=0.9,
    noise_sigma=2.5,
    jpeg_quality=80,
)

_SITE4 = HospitalProtocol(
    name="site4",
    description="like the CellaVision blog images: close to clinic, slightly paler stain and cooler light",
    od_vectors=(
        (1.00, 1.70, 0.42),
        (0.55, 0.40, 0.10),
        (0.28, 0.50, 0.20),
        (0.12, 0.72, 0.62),
        (1.35, 2.10, 0.70),
        (0.18, 0.33, 0.21),
    ),
    strengths=(0.95, 1.0, 1.0, 1.0, 1.0, 1.0),
    background=(250.0, 226.0, 205.0),
    vignetting=0.04,
    blur_sigma=0.6,
    noise_sigma=2.0,
    jpeg_quality=88,
)

DEFAULT_HOSPITALS: dict[str, HospitalProtocol] = {p.name: p for p in (_CLINIC, _HGTP, _SITE3, _SITE4)}
_SITE_NAME = re.compile(r"^site(\d+)$")


@lru_cache(maxsize=64)
def _perturbed_site(name: str) -> HospitalProtocol:
    """A random but fixed protocol for ``siteN`` (N beyond the presets): a seeded perturbation of one preset."""
    rng = np.random.default_rng([zlib.crc32(name.encode()), 7])
    presets = list(DEFAULT_HOSPITALS.values())
    base = presets[int(rng.integers(len(presets)))]
    od = np.asarray(base.od_vectors) * np.exp(rng.normal(0.0, 0.15, (_N_STAINS, 3)))
    strengths = np.asarray(base.strengths) * np.exp(rng.normal(0.0, 0.15, _N_STAINS))
    background = np.clip(np.asarray(base.background) * np.exp(rng.normal(0.0, 0.05, 3)), 150, 255)
    return dataclasses.replace(
        base,
        name=name,
        description=f"seeded random perturbation of {base.name}",
        od_vectors=tuple(tuple(float(round(v, 3)) for v in row) for row in od),
        strengths=tuple(float(round(s, 3)) for s in strengths),
        background=tuple(float(round(b, 1)) for b in background),
        vignetting=float(round(rng.uniform(0.0, 0.12), 3)),
        blur_sigma=float(round(rng.uniform(0.4, 1.2), 2)),
        noise_sigma=float(round(rng.uniform(1.0, 3.5), 2)),
        jpeg_quality=int(rng.integers(70, 96)),
    )


def get_hospital(name: str | HospitalProtocol) -> HospitalProtocol:
    """The protocol called ``name``: a preset of :data:`DEFAULT_HOSPITALS` or ``siteN`` (any N >= 3)."""
    if isinstance(name, HospitalProtocol):
        return name
    if name in DEFAULT_HOSPITALS:
        return DEFAULT_HOSPITALS[name]
    match = _SITE_NAME.match(str(name))
    if match and int(match.group(1)) >= 3:
        return _perturbed_site(str(name))
    raise StainshiftError(f"unknown hospital {name!r}; pass one of {', '.join(DEFAULT_HOSPITALS)} or siteN (N >= 3)")


def hospital_names(k: int) -> list[str]:
    """The first ``k`` hospital names: clinic, hgtp, site3, site4, site5, ..."""
    if k < 1:
        raise StainshiftError(f"hospitals={k}: pass a number of hospitals >= 1 or a list of hospital names")
    return ["clinic", "hgtp", *(f"site{i}" for i in range(3, k + 1))][:k]


def resolve_hospitals(hospitals: int | str | Iterable[str | HospitalProtocol]) -> list[HospitalProtocol]:
    """Protocols for ``hospitals``: a count (the first K of :func:`hospital_names`), a name, or a list of names."""
    if isinstance(hospitals, bool):
        raise StainshiftError("hospitals: pass a number of hospitals (e.g. 2) or a list of hospital names")
    if isinstance(hospitals, int | np.integer):
        return [get_hospital(n) for n in hospital_names(hospitals)]
    if isinstance(hospitals, str | HospitalProtocol):
        hospitals = [hospitals]
    protocols = [get_hospital(h) for h in hospitals]
    if not protocols:
        raise StainshiftError("hospitals: the list is empty; pass at least one hospital name, e.g. ['clinic']")
    names = [p.name for p in protocols]
    if len(set(names)) != len(names):
        raise StainshiftError(f"hospitals: {names} repeats a name; pass each hospital once")
    return protocols


# ---------------------------------------------------------------------------------------------------------------
# Cell morphology


@dataclass
class Cell:
    """One simulated cell: its stain concentration maps (S, H, W) float32 and value-coded mask (H, W) uint8."""

    id: str
    cls: str
    index: int
    concentrations: np.ndarray
    mask: np.ndarray


def cell_id(cls: str, index: int) -> str:
    """Stable id of cell ``index`` of class ``cls``, e.g. ``neutrophil_00007``."""
    return f"{cls}_{index:05d}"


def _cell_rng(seed: int, cls: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 1, CLASSES.index(cls), int(index)])


def _hospital_rng(seed: int, hospital: str, cls: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), 2, zlib.crc32(hospital.encode()), CLASSES.index(cls), int(index)])


_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


@lru_cache(maxsize=8)
def _angles(points: int) -> np.ndarray:
    return np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)


def _blob(rng: np.random.Generator, centre: tuple[float, float], radius: float, *, irregular: float = 0.03,
          aspect: float = 1.0, angle: float | None = None, points: int = 40) -> np.ndarray:
    """Polygon (points, 2) of a smooth irregular ellipse, in fixed-point coordinates for cv2."""
    theta = _angles(points)
    amp = rng.normal(0.0, 1.0, 4) * (irregular / np.sqrt(np.arange(1, 5)))  # harmonics 2..5
    phase = rng.uniform(0, 2 * np.pi, 4)
    r = radius * (1.0 + amp @ np.cos(np.arange(2, 6)[:, None] * theta + phase[:, None]))
    x, y = r * np.cos(theta) * aspect, r * np.sin(theta)
    a = rng.uniform(0, 2 * np.pi) if angle is None else angle
    xr = centre[0] + x * math.cos(a) - y * math.sin(a)
    yr = centre[1] + x * math.sin(a) + y * math.cos(a)
    return np.round(np.stack([xr, yr], axis=1) * _ONE).astype(np.int32)


def _fill(size: int, polygons: Sequence[np.ndarray]) -> np.ndarray:
    """Anti-aliased union of filled polygons, float32 in 0..1."""
    canvas = np.zeros((size, size), np.uint8)
    for poly in polygons:  # one call per polygon: fillPoly's even-odd rule would punch holes where they overlap
        cv2.fillPoly(canvas, [poly], 255, cv2.LINE_AA, _SHIFT)
    return canvas.astype(np.float32) * (1.0 / 255.0)


def _disc(size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    c = (round(centre[0] * _ONE), round(centre[1] * _ONE))
    cv2.circle(canvas, c, max(1, round(radius * _ONE)), 255, -1, cv2.LINE_AA, _SHIFT)
    return canvas.astype(np.float32) * (1.0 / 255.0)


def _noise(rng: np.random.Generator, size: int | tuple[int, int], cell_px: float) -> np.ndarray:
    """Smooth zero-mean, unit-ish noise with features of about ``cell_px`` pixels, ``size`` square or (h, w)."""
    h, w = (size, size) if isinstance(size, int | np.integer) else size
    nh, nw = (max(2, round(n / max(cell_px, 1.0)) + 1) for n in (h, w))
    low = rng.standard_normal((nh, nw)).astype(np.float32)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)


def _granules(rng: np.random.Generator, region: np.ndarray, count: int, radius_px: float) -> np.ndarray:
    """Random round granules inside ``region`` (0..1 map): impulses blurred to blobs, peak about 1."""
    size = region.shape[0]
    ys = rng.integers(0, size, count * 3)
    xs = rng.integers(0, size, count * 3)
    keep = region[ys, xs] > 0.5
    ys, xs = ys[keep][:count], xs[keep][:count]
    field = np.zeros((size, size), np.float32)
    np.add.at(field, (ys, xs), rng.uniform(0.7, 1.3, len(ys)).astype(np.float32))
    sigma = max(radius_px, 0.35)
    field = cv2.GaussianBlur(field, (0, 0), sigma)
    return field * (2.0 * np.pi * sigma * sigma)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _red_cells(rng: np.random.Generator, size: int, px: float, wbc_centre: tuple[float, float],
               wbc_radius: float) -> np.ndarray:
    """Red cells with central pallor around the white cell, some cut by the border, some overlapping."""
    out = np.zeros((size, size), np.float32)
    count = int(rng.integers(3, 10))
    # candidates: radius, x, y (as fractions), aspect, pallor depth, density; rejected ones are skipped
    cand = rng.uniform(0.0, 1.0, (count * 6, 6))
    yy, xx = _grid(size)
    placed: list[tuple[float, float, float]] = []
    for u_r, u_x, u_y, u_aspect, u_pallor, u_density in cand:
        if len(placed) >= count:
            break
        r = (3.5 + 0.7 * u_r) * px
        cx, cy = -0.6 * r + u_x * (size + 1.2 * r), -0.6 * r + u_y * (size + 1.2 * r)
        if math.hypot(cx - wbc_centre[0], cy - wbc_centre[1]) < wbc_radius + 0.55 * r:
            continue
        if any(math.hypot(cx - x, cy - y) < 0.75 * (r + q) for x, y, q in placed):
            continue
        placed.append((cx, cy, r))
        x0, x1 = max(0, int(cx - r - 2)), min(size, int(cx + r + 3))
        y0, y1 = max(0, int(cy - r - 2)), min(size, int(cy + r + 3))
        if x0 >= x1 or y0 >= y1:
            continue
        aspect = 0.9 + 0.2 * u_aspect
        dx, dy = (xx[y0:y1, x0:x1] - cx) * aspect, (yy[y0:y1, x0:x1] - cy) / aspect
        d = np.sqrt(dx * dx + dy * dy) * (1.0 / r)
        body = np.clip((1.0 - d) * (r / 1.2) + 0.5, 0.0, 1.0)  # ~1 px soft edge
        pallor = 1.0 - (0.45 + 0.25 * u_pallor) * np.exp(-((d * (1 / 0.45)) ** 2))
        out[y0:y1, x0:x1] += body * pallor * (0.85 + 0.25 * u_density)
    return np.minimum(out, 1.8)


def _platelets(rng: np.random.Generator, size: int, px: float, free: np.ndarray) -> np.ndarray:
    out = np.zeros((size, size), np.float32)
    for _ in range(int(rng.poisson(0.6))):
        x, y = rng.uniform(0, size, 2)
        if free[int(y), int(x)] < 0.5:
            out += _fill(size, [_blob(rng, (x, y), rng.uniform(0.6, 1.1) * px, irregular=0.15)]) * 0.6
    return out


def _nucleus_shape(rng: np.random.Generator, cls: str, size: int, c: tuple[float, float], r: float,
                   px: float) -> np.ndarray:
    """Soft nucleus map (0..1) of a cell of class ``cls`` centred at ``c`` with radius ``r`` (pixels)."""
    canvas = np.zeros((size, size), np.uint8)

    def lobes_along(centres: list[tuple[float, float]], lobe_r: float, bridge: float) -> None:
        for p in centres:
            lobe = _blob(rng, p, lobe_r * rng.uniform(0.85, 1.1), irregular=0.06, aspect=rng.uniform(1.0, 1.35))
            cv2.fillPoly(canvas, [lobe], 255, cv2.LINE_AA, _SHIFT)
        line = np.round(np.asarray(centres) * _ONE).astype(np.int32)
        cv2.polylines(canvas, [line], False, 255, max(1, round(bridge)), cv2.LINE_AA, _SHIFT)

    if cls == "neutrophil":
        n = int(rng.integers(3, 6))
        arc_r = r * rng.uniform(0.42, 0.55)
        start, span = rng.uniform(0, 2 * np.pi), rng.uniform(0.9, 1.5) * np.pi * (n - 1) / 3
        angles = start + np.linspace(0, span, n) + rng.normal(0, 0.12, n)
        off = rng.normal(0, 0.08 * r, 2)
        centres = [(c[0] + off[0] + arc_r * math.cos(a), c[1] + off[1] + arc_r * math.sin(a)) for a in angles]
        lobes_along(centres, r * rng.uniform(0.25, 0.31), 0.45 * px)
    elif cls == "eosinophil":
        a, d = rng.uniform(0, 2 * np.pi), r * rng.uniform(0.36, 0.46)
        off = rng.normal(0, 0.08 * r, 2)
        sag = rng.uniform(0.1, 0.25) * r  # lobes sit on a shallow arc
        centres = [(c[0] + off[0] + s * d * math.cos(a) - sag * math.sin(a),
                    c[1] + off[1] + s * d * math.sin(a) + sag * math.cos(a)) for s in (-1, 1)]
        lobes_along(centres, r * rng.uniform(0.31, 0.37), 0.6 * px)
    elif cls == "basophil":
        cv2.fillPoly(canvas, [_blob(rng, c, r * rng.uniform(0.5, 0.6), irregular=0.14, aspect=1.2)], 255,
                     cv2.LINE_AA, _SHIFT)
    elif cls == "lymphocyte":
        rn = r * rng.uniform(0.76, 0.86)
        a = rng.uniform(0, 2 * np.pi)
        shift = (r - rn) * rng.uniform(0.2, 0.8)
        centre = (c[0] + shift * math.cos(a), c[1] + shift * math.sin(a))
        cv2.fillPoly(canvas, [_blob(rng, centre, rn, irregular=0.03, aspect=rng.uniform(1.0, 1.1))], 255,
                     cv2.LINE_AA, _SHIFT)
    elif cls == "monocyte":
        a = rng.uniform(0, 2 * np.pi)
        rn = r * rng.uniform(0.55, 0.65)
        cv2.fillPoly(canvas, [_blob(rng, c, rn, irregular=0.07, aspect=rng.uniform(1.25, 1.45), angle=a)], 255,
                     cv2.LINE_AA, _SHIFT)
        # kidney / horseshoe notch on the long side
        notch_d = rn * rng.uniform(0.75, 0.95)
        notch = (c[0] - notch_d * math.sin(a), c[1] + notch_d * math.cos(a))
        cv2.circle(canvas, tuple(round(v * _ONE) for v in notch), round(rn * rng.uniform(0.45, 0.6) * _ONE), 0,
                   -1, cv2.LINE_AA, _SHIFT)
    elif cls == "blast":
        rn = r * rng.uniform(0.78, 0.86)
        shift = (r - rn) * rng.uniform(0.0, 0.5)
        a = rng.uniform(0, 2 * np.pi)
        centre = (c[0] + shift * math.cos(a), c[1] + shift * math.sin(a))
        cv2.fillPoly(canvas, [_blob(rng, centre, rn, irregular=0.025)], 255, cv2.LINE_AA, _SHIFT)
    else:  # pragma: no cover - guarded by _check_classes
        raise StainshiftError(f"unknown class {cls!r}")
    return canvas.astype(np.float32) * (1.0 / 255.0)


# class -> (cell radius range in um, nucleus stain strength, chromatin texture amplitude, texture scale in um)
_CELL_PARAMS: dict[str, tuple[tuple[float, float], float, float, float]] = {
    "neutrophil": ((5.6, 6.6), 1.00, 0.18, 0.9),
    "eosinophil": ((6.0, 7.0), 0.95, 0.15, 0.9),
    "basophil": ((5.2, 6.2), 0.80, 0.15, 1.0),
    "lymphocyte": ((3.9, 4.8), 1.15, 0.22, 1.1),
    "monocyte": ((7.2, 8.8), 0.72, 0.28, 0.7),
    "blast": ((6.6, 8.0), 0.78, 0.07, 0.5),
}


def make_cell(cls: str, index: int, size: int = 96, seed: int = 0) -> Cell:
    """Draw the morphology of cell ``index`` of class ``cls``: stain concentration maps and mask."""
    _check_classes([cls])
    _check_size(size)
    rng = _cell_rng(seed, cls, index)
    px = size / FIELD_UM
    (r_lo, r_hi), nuc_strength, tex_amp, tex_um = _CELL_PARAMS[cls]
    r = rng.uniform(r_lo, r_hi) * px
    room = max(0.0, size / 2 - 1.3 * r - 1)  # keep the white cell whole, as in real single-cell crops
    dx, dy = np.clip(rng.normal(0, 0.05 * size, 2), -room, room)
    centre = (size / 2 + float(dx), size / 2 + float(dy))
    irregular = 0.06 if cls == "monocyte" else 0.03
    body = _fill(size, [_blob(rng, centre, r, irregular=irregular, aspect=rng.uniform(1.0, 1.12))])
    nucleus = np.minimum(_nucleus_shape(rng, cls, size, centre, r, px), body)
    cyto = np.clip(body - nucleus, 0.0, 1.0)

    conc = np.zeros((_N_STAINS, size, size), np.float32)
    chromatin = np.maximum(1.0 + tex_amp * _noise(rng, size, tex_um * px), 0.4)
    conc[_NUC] = nucleus * nuc_strength * chromatin * rng.uniform(0.92, 1.08)

    if cls == "neutrophil":
        conc[_CYT] = cyto * 0.08
        conc[_FINE] = cyto * (0.45 + 0.35 * _granules(rng, cyto, int(1.6 * r * r), 0.2 * px))
    elif cls == "eosinophil":
        conc[_FINE] = cyto * 0.15
        grains = _granules(rng, body, int(0.8 * r * r), 0.28 * px)
        conc[_EOS] = np.minimum(cyto * (0.35 + 0.9 * grains), 1.6) + nucleus * 0.3 * grains
    elif cls == "basophil":
        conc[_CYT] = cyto * 0.15
        conc[_FINE] = cyto * 0.3
        conc[_BASO] = np.minimum(body * _granules(rng, body, int(0.7 * r * r), 0.42 * px), 1.3)
    elif cls == "lymphocyte":
        conc[_CYT] = cyto * rng.uniform(0.8, 1.1)
    elif cls == "monocyte":
        vacuoles = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(1, 7))):
            ang, dist = rng.uniform(0, 2 * np.pi), r * rng.uniform(0.5, 0.85)
            vacuoles = np.maximum(vacuoles, _disc(size, (centre[0] + dist * math.cos(ang),
                                                         centre[1] + dist * math.sin(ang)),
                                                  rng.uniform(0.35, 0.8) * px))
        keep = 1.0 - 0.85 * vacuoles
        conc[_CYT] = cyto * keep * (0.38 + 0.06 * _noise(rng, size, 1.5 * px))
        conc[_FINE] = cyto * keep * 0.45
    elif cls == "blast":
        conc[_CYT] = cyto * rng.uniform(1.0, 1.25)
        for _ in range(int(rng.integers(1, 4))):
            ang, dist = rng.uniform(0, 2 * np.pi), r * rng.uniform(0.0, 0.4)
            spot = _disc(size, (centre[0] + dist * math.cos(ang), centre[1] + dist * math.sin(ang)),
                         rng.uniform(0.55, 0.9) * px) * nucleus
            conc[_NUC] *= 1.0 - 0.6 * spot
            conc[_CYT] += 0.6 * spot

    rbc = _red_cells(rng, size, px, centre, r) * (1.0 - body)
    conc[_RBC] = rbc
    conc[_NUC] += _platelets(rng, size, px, np.maximum(body, np.minimum(rbc, 1.0)))

    mask = np.zeros((size, size), np.uint8)
    mask[body >= 0.5] = MASK_VALUES[CYTOPLASM]
    mask[(nucleus >= 0.5) & (body >= 0.5)] = MASK_VALUES[NUCLEUS]
    return Cell(cell_id(cls, index), cls, int(index), conc, mask)


# ---------------------------------------------------------------------------------------------------------------
# Rendering


# 256 quantiles of the standard normal: a Gaussian draw from one random byte, 5x faster than standard_normal
_GAUSS_LUT = np.asarray([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], np.float32)


@lru_cache(maxsize=32)
def _vignette(height: int, width: int, strength: float) -> np.ndarray:
    """(H, W, 1) illumination falloff: 1 at the centre, ``1 - strength`` at the corners."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    rr = ((xx - cx) ** 2 + (yy - cy) ** 2) / (cx ** 2 + cy ** 2 or 1.0)
    out = (1.0 - strength * rr)[:, :, None]
    out.setflags(write=False)
    return out


def render(cell: Cell, hospital: str | HospitalProtocol, seed: int = 0) -> np.ndarray:
    """Image (H, W, 3) uint8 of ``cell`` stained and photographed under ``hospital``'s protocol."""
    protocol = get_hospital(hospital)
    rng = _hospital_rng(seed, protocol.name, cell.cls, cell.index)
    size = cell.mask.shape[0]
    return _photograph(cell.concentrations, protocol, rng, protocol.blur_sigma * size / 96)


def render_concentrations(conc: np.ndarray, hospital: str | HospitalProtocol, rng: np.random.Generator,
                          blur_scale: float = 1.0) -> np.ndarray:
    """Image (H, W, 3) uint8 of the stain concentration maps ``conc`` (S, H, W) under ``hospital``'s protocol.

    ``blur_scale`` is the pixel scale relative to the simulator's 96 px cells (3 px/um): the focus blur is
    ``blur_sigma * blur_scale`` pixels. The random draws (stain and light jitter, sensor noise) come from ``rng``.
    """
    conc = np.asarray(conc, np.float32)
    if conc.ndim != 3 or conc.shape[0] != _N_STAINS:
        raise StainshiftError(f"concentrations of shape {conc.shape}: pass (S, H, W) with S = {_N_STAINS} "
                              f"stains ({', '.join(STAINS)})")
    protocol = get_hospital(hospital)
    return _photograph(conc, protocol, rng, protocol.blur_sigma * float(blur_scale))


def _photograph(conc: np.ndarray, protocol: HospitalProtocol, rng: np.random.Generator, sigma: float
                ) -> np.ndarray:
    """Beer-Lambert staining, illumination, vignetting, focus blur (``sigma`` px), noise and JPEG."""
    _, height, width = conc.shape
    strengths = np.asarray(protocol.strengths, np.float32) * np.exp(
        rng.normal(0.0, protocol.stain_jitter, _N_STAINS)).astype(np.float32)
    od_matrix = np.asarray(protocol.od_vectors, np.float32) * strengths[:, None]
    od = (conc.reshape(_N_STAINS, -1).T @ od_matrix).reshape(height, width, 3)
    light = np.asarray(protocol.background, np.float32) * np.float32(math.exp(rng.normal(0, protocol.light_jitter)))
    image = np.exp(-od) * light * _vignette(height, width, protocol.vignetting)
    if sigma > 0.05:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    if protocol.noise_sigma > 0:
        noise = cv2.LUT(np.frombuffer(rng.bytes(image.size), np.uint8).reshape(image.shape), _GAUSS_LUT)
        image += noise * (np.sqrt(np.maximum(image, 0.0) * (1.0 / 255.0)) * protocol.noise_sigma)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if protocol.jpeg_quality is not None:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        _, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(protocol.jpeg_quality)])
        image = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return image


@dataclass
class CellBatch:
    """Cells rendered in memory: ``images[hospital]`` is (N, H, W, 3) uint8, ``masks`` (N, H, W) uint8."""

    ids: list[str]
    classes: list[str]
    labels: np.ndarray  # (N,) int64 index into the ``class_names`` used
    class_names: tuple[str, ...]
    masks: np.ndarray
    images: dict[str, np.ndarray]


def _cell_keys(per_class: int, classes: Sequence[str], start: int) -> list[tuple[str, int]]:
    return [(c, i) for c in classes for i in range(start, start + per_class)]


def iter_cells(per_class: int, size: int = 96, seed: int = 0, classes: Sequence[str] = CLASSES,
               start: int = 0) -> Iterator[Cell]:
    """Cells ``start .. start+per_class-1`` of every class, class by class."""
    _check_args(per_class, size, classes, start)
    for cls, i in _cell_keys(per_class, classes, start):
        yield make_cell(cls, i, size, seed)


def render_cells(per_class: int, hospitals: int | str | Iterable[str | HospitalProtocol] = 2, size: int = 96,
                 seed: int = 0, classes: Sequence[str] = CLASSES, start: int = 0) -> CellBatch:
    """Generate ``per_class`` cells of each class (indices from ``start``) and render them under each hospital."""
    protocols = resolve_hospitals(hospitals)
    classes = tuple(classes)
    _check_args(per_class, size, classes, start)
    n = per_class * len(classes)
    images = {p.name: np.empty((n, size, size, 3), np.uint8) for p in protocols}
    masks = np.empty((n, size, size), np.uint8)
    ids, names = [], []
    for k, cell in enumerate(iter_cells(per_class, size, seed, classes, start)):
        ids.append(cell.id)
        names.append(cell.cls)
        masks[k] = cell.mask
        for p in protocols:
            images[p.name][k] = render(cell, p, seed)
    labels = np.asarray([classes.index(c) for c in names], np.int64)
    return CellBatch(ids, names, labels, classes, masks, images)


# ---------------------------------------------------------------------------------------------------------------
# Writing a data set


def simulate(out: str | Path, hospitals: int | str | Iterable[str | HospitalProtocol] = 2, per_class: int = 100,
             size: int = 96, seed: int = 0, classes: Sequence[str] = CLASSES, progress: bool = False
             ) -> pd.DataFrame:
    """Write a paired data set and return its table (also saved as ``<out>/pairs.csv``).

    Images go to ``<out>/<hospital>/<class>/<id>.png``, value-coded masks (0 background, 128 cytoplasm,
    255 nucleus; identical for every hospital) to ``<out>/<hospital>/masks/<class>/<id>.png``. The table has one
    row per cell and hospital: id, class, hospital, image, mask (paths relative to ``out``).
    """
    protocols = resolve_hospitals(hospitals)
    classes = tuple(classes)
    _check_args(per_class, size, classes, 0)
    out = Path(out)
    keys = _cell_keys(per_class, classes, 0)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(keys) * len(protocols), desc="simulate", unit="img")
    rows = []
    for cls, i in keys:
        cell = make_cell(cls, i, size, seed)
        for p in protocols:
            image_rel = Path(p.name, cls, f"{cell.id}.png")
            mask_rel = Path(p.name, "masks", cls, f"{cell.id}.png")
            write_image(out / image_rel, render(cell, p, seed))
            write_mask(out / mask_rel, cell.mask)
            rows.append({"id": cell.id, "class": cls, "hospital": p.name,
                         "image": image_rel.as_posix(), "mask": mask_rel.as_posix()})
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    table = pd.DataFrame(rows, columns=["id", "class", "hospital", "image", "mask"])
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, lineterminator="\n")
    atomic_write_text(out / "pairs.csv", buffer.getvalue())
    return table


# ---------------------------------------------------------------------------------------------------------------
# Argument checks


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < MIN_SIZE:
        raise StainshiftError(f"size={size!r}: pass an image size in pixels >= {MIN_SIZE} (e.g. 96)")


def _check_classes(classes: Sequence[str]) -> None:
    unknown = [c for c in classes if c not in CLASSES]
    if isinstance(classes, str) or unknown or not classes:
        raise StainshiftError(f"classes={list(classes) if not isinstance(classes, str) else classes!r}: "
                              f"pass a non-empty list drawn from {', '.join(CLASSES)}")
    if len(set(classes)) != len(classes):
        raise StainshiftError(f"classes={list(classes)}: each class may appear once")


def _check_args(per_class: int, size: int, classes: Sequence[str], start: int) -> None:
    if isinstance(per_class, bool) or not isinstance(per_class, int | np.integer) or per_class < 1:
        raise StainshiftError(f"per_class={per_class!r}: pass a number of cells per class >= 1")
    if isinstance(start, bool) or not isinstance(start, int | np.integer) or start < 0:
        raise StainshiftError(f"start={start!r}: pass a first cell index >= 0")
    _check_size(size)
    _check_classes(classes)
