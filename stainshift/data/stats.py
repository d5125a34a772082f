"""Image statistics and white-cell diameter estimation.

``lab_stats`` summarises the colour of a domain in CIE L*a*b*; the diameter functions measure how many pixels the
central white cell spans, from a site mask when there is one and otherwise from a colour-threshold segmentation.
Harmonising scale across sites means resizing so that these diameters agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from stainshift.data.io import cell_regions, read_image, read_mask
from stainshift.errors import ImageReadError

# ----------------------------------------------------------------------------------------------------------------
# Colour statistics


@dataclass(frozen=True)
class LabStats:
    """Mean and standard deviation of L*, a*, b* over all pixels of all images, plus each image's mean."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    n_pixels: int
    n_images: int
    image_means: np.ndarray  # (n_images, 3), so callers can report the spread between images

    def as_dict(self) -> dict[str, object]:
        """Plain-python form for JSON / TOML reports."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "n_pixels": self.n_pixels,
            "n_images": self.n_images,
            "image_mean_std": self.image_means.std(axis=0).tolist() if self.n_images else [0.0, 0.0, 0.0],
        }


def to_lab(image: np.ndarray) -> np.ndarray:
    """RGB image (``uint8`` 0..255 or float 0..1) -> float32 L*a*b* (L 0..100, a/b about -128..127)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    rgb = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)


def lab_stats(images: Iterable[np.ndarray]) -> LabStats:
    """L*a*b* mean/std over every pixel of ``images`` in one pass (images are merged by Chan's formula)."""
    n_total = 0
    mean = np.zeros(3)
    m2 = np.zeros(3)  # sum of squared deviations from the running mean
    image_means: list[np.ndarray] = []
    for image in images:
        lab = to_lab(image)
        n = lab.shape[0] * lab.shape[1]
        if n == 0:
            continue
        # cv2 reduces in double precision and is ~40x faster than numpy's strided axis-0 reductions here
        img_mean, img_std = (v.ravel()[:3] for v in cv2.meanStdDev(lab))
        img_m2 = img_std**2 * n
        delta = img_mean - mean
        total = n_total + n
        mean = mean + delta * (n / total)
        m2 = m2 + img_m2 + delta**2 * (n_total * n / total)
        n_total = total
        image_means.append(img_mean)
    std = np.sqrt(m2 / n_total) if n_total else np.zeros(3)
    return LabStats(
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        n_pixels=n_total,
        n_images=len(image_means),
        image_means=np.array(image_means).reshape(-1, 3),
    )


# ----------------------------------------------------------------------------------------------------------------
# Cell diameter from masks


def equivalent_diameter(area: float) -> float:
    """Diameter (px) of the circle with this area (px²)."""
    return 2.0 * math.sqrt(area / math.pi)


def _fill_holes(region: np.ndarray) -> np.ndarray:
    """``region`` with every hole filled (all that the border cannot reach through the background)."""
    padded = np.pad(region.astype(np.uint8), 1)
    cv2.floodFill(padded, None, (0, 0), 2)
    return (padded != 2)[1:-1, 1:-1]


def _central_component(region: np.ndarray, min_fraction: float) -> np.ndarray | None:
    """The component whose centroid is nearest the image centre, among those with at least ``min_fraction`` of
    the largest component's area (so that specks never win); None when ``region`` is empty."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    if count <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    centre = np.array([(region.shape[1] - 1) / 2.0, (region.shape[0] - 1) / 2.0])
    dist = np.linalg.norm(centroids[1:] - centre, axis=1)
    dist[areas < min_fraction * areas.max()] = np.inf
    return labels == int(np.argmin(dist)) + 1


def _component_containing(region: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Union of the components of ``region`` that overlap ``seed``."""
    _, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    ids = np.unique(labels[seed & region])
    return np.isin(labels, ids[ids != 0])


def cell_mask_from_site_mask(mask: np.ndarray) -> np.ndarray | None:
    """The central white cell (nucleus + cytoplasm, holes filled) of a mask, or None when the mask is empty.

    ``mask`` is a boolean cell mask, a region map (0 background, 1 cytoplasm, 2 nucleus) or a value-coded site
    mask (0 / ~128-155 / 255, quantised by :func:`~stainshift.data.io.cell_regions`). Of several cells, the one
    nearest the centre among those at least a quarter the size of the largest is kept.
    """
    mask = np.asarray(mask)
    if mask.dtype == bool:
        cell = mask
    elif mask.max(initial=0) <= 2:
        cell = mask > 0
    else:
        cell = cell_regions(mask) > 0
    component = _central_component(cell, min_fraction=0.25)
    return None if component is None else _fill_holes(component)


def cell_diameter_from_mask(mask: np.ndarray) -> float | None:
    """Equivalent-circle diameter (px) of the central white cell of a mask; None when the mask is empty."""
    cell = cell_mask_from_site_mask(mask)
    return None if cell is None else equivalent_diameter(float(cell.sum()))


# ----------------------------------------------------------------------------------------------------------------
# Cell diameter without a mask: colour-threshold segmentation

_WORK_SIZE = 256  # larger images are segmented at this short side (speed; every size below is relative)
_MIN_SIZE = 24  # smaller images hold no measurable cell
_MIN_NUCLEUS_CONTRAST = 0.08  # blueness (B - G) / (R + G + B), nucleus class minus the rest
_MIN_NUCLEUS_DARKENING = 8.0  # L*, background minus nucleus
_FG_NOISE = 3.0  # foreground starts at this multiple of the background's own colour spread (p99 ΔE) ...
_FG_MIN_DE = 6.0  # ... but never below this ΔE
_RED_MAHALANOBIS = 2.0  # a pixel this near the red-cell colour model (and nearer than to the cytoplasm) is red
_OPEN_FRACTION = 0.6  # final opening radius, as a fraction of the largest inscribed radius of the cell
_RED_OPEN = 1.1  # ... or this many red-cell radii, when red cells are clearly smaller than the white cell


def _disk(radius: float) -> np.ndarray:
    r = max(1, round(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _open(region: np.ndarray, radius: float) -> np.ndarray:
    return cv2.morphologyEx(region.astype(np.uint8), cv2.MORPH_OPEN, _disk(radius)) > 0


def _otsu(values: np.ndarray, lo: float, hi: float) -> float:
    """Otsu threshold of ``values``, on a 256-bin histogram spanning [lo, hi]."""
    scaled = np.clip((values - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8).reshape(-1, 1)
    t, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return lo + (t + 0.5) / 255.0 * (hi - lo)


def _mahalanobis(lab: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of every pixel of ``lab`` (H x W x 3) to the distribution of ``samples`` (N x 3)."""
    samples = samples.astype(np.float64)
    inv = np.linalg.inv(np.cov(samples.T) + np.eye(3))  # + 1 ΔE² keeps near-uniform samples invertible
    diff = lab.reshape(-1, 3) - samples.mean(axis=0)
    return np.sqrt(np.einsum("ij,jk,ik->i", diff, inv, diff)).reshape(lab.shape[:2])


def _red_cells(candidates: np.ndarray, nucleus: np.ndarray, min_area: float) -> np.ndarray:
    """Components of ``candidates`` holding no nucleus pixel and at least ``min_area`` px: red cells."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(candidates.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    keep[np.unique(labels[nucleus & candidates])] = False
    return keep[labels]


def _red_cell_diameter(red: np.ndarray) -> float | None:
    """Median red-cell diameter: twice the largest inscribed radius of each component (robust to clumps and to
    cells cut by the border); None with fewer than two components."""
    red = _fill_holes(red)
    count, labels = cv2.connectedComponents(red.astype(np.uint8), connectivity=8)
    if count < 3:
        return None
    inscribed = cv2.distanceTransform(red.astype(np.uint8), cv2.DIST_L2, 5)
    radii = np.zeros(count)
    np.maximum.at(radii, labels.ravel(), inscribed.ravel())
    return float(2.0 * np.median(radii[1:]))


def _fill_holes_without(region: np.ndarray, protected: np.ndarray) -> np.ndarray:
    """Fill the holes of ``region`` that hold no ``protected`` pixel (red-cell pale centres, not the white cell)."""
    holes = _fill_holes(region) & ~region
    return region | (holes & ~_component_containing(holes, protected))


def _segment(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`segment_cell_regions` on a ``uint8`` RGB image of working size."""
    h, w = rgb.shape[:2]
    size = min(h, w)
    smooth = cv2.GaussianBlur(rgb, (0, 0), max(0.8, size / 150))
    lab = to_lab(smooth)
    f = smooth.astype(np.float32)
    blue = (f[..., 2] - f[..., 1]) / (f.sum(axis=2) + 1.0)
    if np.ptp(blue) < _MIN_NUCLEUS_CONTRAST:
        return None

    # 1. nucleus: the bluest class; the component nearest the centre seeds the cell, its neighbours are lobes
    nucleus = _open(blue > _otsu(blue, -0.5, 0.5), size / 100)
    if nucleus.sum() < 1e-3 * h * w or nucleus.all():
        return None
    if blue[nucleus].mean() - blue[~nucleus].mean() < _MIN_NUCLEUS_CONTRAST:
        return None
    seed = _central_component(nucleus, min_fraction=0.1)
    if seed is None:
        return None
    nuc_diam = equivalent_diameter(float(seed.sum()))
    lobes = _component_containing(nucleus, cv2.dilate(seed.astype(np.uint8), _disk(nuc_diam * 0.5)) > 0)

    # 2. foreground: far enough (ΔE) from the background colour, the median of the brightest quarter
    light = lab[..., 0]
    top = light >= np.percentile(light, 75)
    bg = np.median(lab[top], axis=0)
    if bg[0] - light[seed].mean() < _MIN_NUCLEUS_DARKENING:
        return None
    delta_e = np.linalg.norm(lab - bg, axis=2)
    t_otsu = float(np.clip(_otsu(delta_e[~nucleus], 0.0, 60.0), 5.0, 25.0))
    t_noise = max(_FG_MIN_DE, _FG_NOISE * float(np.percentile(delta_e[top], 99)))
    fg = _open((delta_e > min(t_otsu, t_noise)) | seed, size / 100)

    # 3. the foreground connected to the nucleus, less pixels coloured like the red cells (the foreground
    #    components without a nucleus; failing those, the connected foreground far from the nucleus)
    connected = _fill_holes(_component_containing(fg | lobes, seed))
    red = _red_cells(fg & ~connected, nucleus, min_area=max(0.25 * lobes.sum(), 0.002 * h * w))
    red_diam = _red_cell_diameter(red)
    if red.sum() <= 0.01 * h * w:
        away = cv2.distanceTransform((~lobes).astype(np.uint8), cv2.DIST_L2, 5)
        red |= connected & (away > 0.6 * equivalent_diameter(float(lobes.sum())))
    cell = connected
    if red.sum() > 0.01 * h * w:
        near_lobes = cv2.dilate(lobes.astype(np.uint8), _disk(max(3.0, nuc_diam * 0.15))) > 0
        cytoplasm = connected & ~lobes & near_lobes
        d_red = _mahalanobis(lab, lab[red])
        red_like = d_red < _RED_MAHALANOBIS
        if cytoplasm.sum() > 30:
            red_like &= d_red < _mahalanobis(lab, lab[cytoplasm])
        cell = connected & ~_fill_holes_without(red_like & ~lobes, lobes)
    cell = _fill_holes(_component_containing(cell | lobes, seed))

    # 4. open to cut off what still hangs on by a neck (touching red cells, debris)
    radius = float(cv2.distanceTransform(cell.astype(np.uint8), cv2.DIST_L2, 5).max())
    r_open = _OPEN_FRACTION * radius
    if red_diam is not None and _RED_OPEN * red_diam / 2 < 0.85 * radius:
        r_open = max(r_open, _RED_OPEN * red_diam / 2)
    cell = _component_containing(_open(cell, r_open) | seed, seed)
    return cell, lobes & cell


def segment_cell(image: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the crop's central white cell from colour thresholds, or None when there is none (see
    :func:`segment_cell_regions`)."""
    regions = segment_cell_regions(image)
    return None if regions is None else regions[0]


def segment_cell_regions(image: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Boolean masks (cell, nucleus) of the crop's central white cell from colour thresholds, or None.

    1. Nucleus: Otsu on blueness (B - G) / (R + G + B); white-cell nuclei are the bluest, darkest objects, red
       cells and background are not. The nucleus component nearest the centre seeds the cell.
    2. Foreground: ΔE to the background colour above a threshold (Otsu, lowered to a few times the background's
       own spread so that pale cytoplasm counts).
    3. Cell: the foreground connected to the nucleus, holes filled, less the pixels whose colour matches the red
       cells (Mahalanobis distance to the red-cell colours, nearer those than the cytoplasm ring's).
    4. An opening scaled to the cell (and to the red-cell size) cuts off touching red cells.

    Uniform, background-only and colourless images give None (no warning).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    h, w = image.shape[:2]
    if min(h, w) < _MIN_SIZE:
        return None
    scale = min(1.0, _WORK_SIZE / min(h, w))
    work = image
    if scale < 1.0:
        work = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    regions = _segment(work)
    if regions is None or scale == 1.0:
        return regions
    return tuple(cv2.resize(r.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
                 for r in regions)


def estimate_cell_diameter(image: np.ndarray) -> float | None:
    """Equivalent-circle diameter (px) of the crop's central white cell, without a mask; None if none is found."""
    cell = segment_cell(image)
    return None if cell is None else equivalent_diameter(float(cell.sum()))


# ----------------------------------------------------------------------------------------------------------------
# Per-domain diameter


@dataclass(frozen=True)
class DiameterEstimate:
    """A domain's cell diameter (px): median and quartiles over the images where a cell was measured."""

    median: float | None
    p25: float | None
    p75: float | None
    n: int  # images measured
    n_sampled: int  # images tried (at most max_images)
    n_no_cell: int  # no cell found (empty mask, or nothing to segment)
    n_unreadable: int  # ImageReadError, skipped
    source: str  # "masks" or "threshold"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def domain_cell_diameter(
    image_paths: Sequence[str | Path],
    mask_paths: Sequence[str | Path] | None = None,
    max_images: int = 200,
    seed: int = 0,
) -> DiameterEstimate:
    """Median cell diameter of a domain from at most ``max_images`` images, sampled deterministically by ``seed``.

    With ``mask_paths`` (parallel to ``image_paths``) the masks are measured and the images are not read;
    otherwise the images are segmented. Unreadable files are counted and skipped.
    """
    images = [Path(p) for p in image_paths]
    masks: list[Path | None] = [None] * len(images) if mask_paths is None else [Path(m) for m in mask_paths]
    if len(masks) != len(images):
        raise ValueError(f"{len(masks)} mask paths for {len(images)} images; pass one mask per image")
    pairs = sorted(zip(images, masks, strict=True), key=lambda pair: str(pair[0]))  # caller's order is moot
    if len(pairs) > max_images:
        picked = np.random.default_rng(seed).choice(len(pairs), size=max_images, replace=False)
        pairs = [pairs[i] for i in sorted(picked)]
    diameters: list[float] = []
    unreadable = no_cell = 0
    for image_path, mask_path in pairs:
        try:
            if mask_path is not None:
                diameter = cell_diameter_from_mask(read_mask(mask_path))
            else:
                diameter = estimate_cell_diameter(read_image(image_path))
        except ImageReadError:
            unreadable += 1
            continue
        if diameter is None:
            no_cell += 1
        else:
            diameters.append(diameter)
    quartiles = [float(q) for q in np.percentile(diameters, [25, 50, 75])] if diameters else [None] * 3
    return DiameterEstimate(
        median=quartiles[1],
        p25=quartiles[0],
        p75=quartiles[2],
        n=len(diameters),
        n_sampled=len(pairs),
        n_no_cell=no_cell,
        n_unreadable=unreadable,
        source="threshold" if mask_paths is None else "masks",
    )
