"""Colour statistics and cell-diameter estimation (stainshift.data.stats)."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from stainshift.data.io import list_images, read_image, read_mask
from stainshift.data.stats import (
    DiameterEstimate,
    cell_diameter_from_mask,
    domain_cell_diameter,
    estimate_cell_diameter,
    lab_stats,
    segment_cell,
)

DATA = Path(os.environ.get("STAINSHIFT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

BACKGROUND = (238, 226, 212)  # cream
RED_CELL = (214, 150, 160)  # pink
CYTOPLASM = (196, 180, 222)  # pale lilac
NUCLEUS = (112, 58, 160)  # purple


def smear(size: int = 300, diameter: int = 120, background=BACKGROUND, red_cells: bool = True,
          touching: bool = False, seed: int = 0) -> np.ndarray:
    """A synthetic crop: a white cell (cytoplasm disc of ``diameter`` px, nucleus inside; none if 0) at the
    centre, pink red cells with pale centres around it, mild noise and blur."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), background, np.float32)
    c = size // 2
    rbc_r = max(6, diameter // 4 if diameter else size // 12)
    if red_cells:
        for angle in np.linspace(0, 2 * np.pi, 7, endpoint=False) + rng.uniform(0, 0.5):
            gap = -(rbc_r // 3) if touching and angle < 3 else 6 + rng.integers(0, 12)
            dist = diameter // 2 + rbc_r + gap
            x, y = int(c + dist * np.cos(angle)), int(c + dist * np.sin(angle))
            cv2.circle(image, (x, y), rbc_r, RED_CELL, -1, cv2.LINE_AA)
            cv2.circle(image, (x, y), rbc_r // 2, (226, 188, 190), -1, cv2.LINE_AA)
    if diameter:
        cv2.circle(image, (c, c), diameter // 2, CYTOPLASM, -1, cv2.LINE_AA)
        cv2.ellipse(image, (c - diameter // 10, c), (diameter // 4, diameter // 5), 20, 0, 360, NUCLEUS, -1,
                    cv2.LINE_AA)
    image += rng.normal(0, 3, image.shape)
    image = cv2.GaussianBlur(image, (0, 0), 1.0)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- lab_stats


def test_lab_stats_matches_direct_computation():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(20, 30), (7, 5), (64, 64)]]
    images.append(smear(size=80, diameter=40))
    stats = lab_stats(iter(images))  # a generator: one pass, nothing held
    pixels = np.concatenate([im.reshape(-1, 3) for im in images])[None].astype(np.float32) / 255.0
    lab = cv2.cvtColor(pixels, cv2.COLOR_RGB2Lab)[0].astype(np.float64)
    np.testing.assert_allclose(stats.mean, lab.mean(axis=0), atol=1e-3)
    np.testing.assert_allclose(stats.std, lab.std(axis=0), atol=1e-3)
    assert stats.n_pixels == pixels.shape[1] and stats.n_images == 4
    assert stats.image_means.shape == (4, 3)
    np.testing.assert_allclose(stats.image_means[3], cv2.cvtColor(images[3].astype(np.float32) / 255.0,
                                                                  cv2.COLOR_RGB2Lab).reshape(-1, 3).mean(0),
                               atol=1e-3)


def test_lab_stats_ranges_and_empty():
    white = lab_stats([np.full((4, 4, 3), 255, np.uint8)])
    assert white.mean[0] == pytest.approx(100.0, abs=0.01) and abs(white.mean[1]) < 0.01
    empty = lab_stats([])
    assert empty.n_images == 0 and empty.mean == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="RGB"):
        lab_stats([np.zeros((4, 4), np.uint8)])


# ---------------------------------------------------------------------------------------------- masks


def test_mask_diameter_of_drawn_disc_is_exact():
    mask = np.zeros((200, 200), np.uint8)
    cv2.circle(mask, (100, 100), 40, 255, -1)
    expected = 2 * math.sqrt((mask > 0).sum() / math.pi)
    assert cell_diameter_from_mask(mask) == pytest.approx(expected, rel=1e-12)
    assert cell_diameter_from_mask(mask) == pytest.approx(80, abs=1)  # area of a radius-40 disc: π·40²
    assert cell_diameter_from_mask(mask > 0) == pytest.approx(expected, rel=1e-12)


def test_mask_diameter_site_encoding_central_cell_and_empty():
    mask = np.zeros((200, 200), np.uint8)
    cv2.circle(mask, (100, 100), 40, 128, -1)  # cytoplasm
    cv2.circle(mask, (95, 100), 15, 255, -1)  # nucleus counts too
    cv2.circle(mask, (100, 100), 5, 0, -1)  # a hole is filled
    cv2.circle(mask, (20, 20), 15, 128, -1)  # another, off-centre cell is ignored
    disc = np.zeros_like(mask)
    cv2.circle(disc, (100, 100), 40, 1, -1)
    assert cell_diameter_from_mask(mask) == pytest.approx(2 * math.sqrt(disc.sum() / math.pi), rel=1e-12)
    assert cell_diameter_from_mask(np.zeros((50, 50), np.uint8)) is None
    noisy = np.full((50, 50), 40, np.uint8)  # below the cytoplasm band: background
    assert cell_diameter_from_mask(noisy) is None


# ---------------------------------------------------------------------------------------------- threshold


@pytest.mark.parametrize(
    ("size", "diameter", "background", "touching"),
    [
        (300, 120, BACKGROUND, False),  # PBC-like
        (300, 120, BACKGROUND, True),  # red cells pressed against the white cell
        (120, 62, (250, 244, 190), False),  # jtsc-like: small crop, yellow background
        (360, 90, (246, 246, 246), False),  # small cell on white
    ],
)
def test_threshold_estimate_on_synthetic_crops(size, diameter, background, touching):
    image = smear(size=size, diameter=diameter, background=background, touching=touching)
    truth = 2 * (diameter // 2)
    estimate = estimate_cell_diameter(image)
    assert estimate is not None
    assert estimate == pytest.approx(truth, rel=0.10)
    cell = segment_cell(image)
    assert cell.shape == image.shape[:2] and cell[size // 2, size // 2]


def test_threshold_ignores_red_cells_only_and_blank_images():
    no_white_cell = smear(diameter=0)
    cases = [
        np.full((200, 200, 3), 255, np.uint8),
        np.full((300, 300, 3), BACKGROUND, np.uint8),
        np.clip(np.full((300, 300, 3), BACKGROUND) + np.random.default_rng(0).normal(0, 4, (300, 300, 3)), 0,
                255).astype(np.uint8),
        np.zeros((64, 64, 3), np.uint8),
        np.full((64, 64, 3), NUCLEUS, np.uint8),
        np.repeat(np.tile(np.arange(256, dtype=np.uint8), (256, 1))[..., None], 3, axis=2),
        np.full((8, 8, 3), 200, np.uint8),
        no_white_cell,
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for image in cases:
            assert estimate_cell_diameter(image) is None


def test_threshold_accepts_float_images():
    image = smear(size=150, diameter=70)
    assert estimate_cell_diameter(image.astype(np.float32) / 255.0) == pytest.approx(
        estimate_cell_diameter(image), rel=0.02)


# ---------------------------------------------------------------------------------------------- domain


def _write_domain(folder: Path, n: int) -> tuple[list[Path], list[Path]]:
    images, masks = [], []
    for i in range(n):
        diameter = 60 + 4 * i
        image_path = folder / f"cell_{i:02d}.png"
        cv2.imwrite(str(image_path), cv2.cvtColor(smear(size=160, diameter=diameter, seed=i), cv2.COLOR_RGB2BGR))
        mask = np.zeros((160, 160), np.uint8)
        cv2.circle(mask, (80, 80), diameter // 2, 128, -1)
        mask_path = folder / f"cell_{i:02d}_mask.png"
        cv2.imwrite(str(mask_path), mask)
        images.append(image_path)
        masks.append(mask_path)
    return images, masks


def test_domain_cell_diameter_threshold_masks_and_bad_files(tmp_path):
    images, masks = _write_domain(tmp_path, 6)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    estimate = domain_cell_diameter([*images, broken], max_images=200)
    assert isinstance(estimate, DiameterEstimate) and estimate.source == "threshold"
    assert (estimate.n, estimate.n_unreadable, estimate.n_no_cell, estimate.n_sampled) == (6, 1, 0, 7)
    truth = np.median([2 * ((60 + 4 * i) // 2) for i in range(6)])
    assert estimate.median == pytest.approx(truth, rel=0.10)
    assert estimate.p25 <= estimate.median <= estimate.p75

    from_masks = domain_cell_diameter(images, masks)
    assert from_masks.source == "masks" and from_masks.n == 6
    assert from_masks.median == pytest.approx(truth, rel=0.02)


def test_domain_cell_diameter_sampling_is_deterministic(tmp_path):
    images, masks = _write_domain(tmp_path, 8)
    a = domain_cell_diameter(images, masks, max_images=3, seed=5)
    b = domain_cell_diameter(list(reversed(images)), list(reversed(masks)), max_images=3, seed=5)
    assert a == b and a.n_sampled == 3
    empty = domain_cell_diameter([])
    assert empty.median is None and empty.n == 0
    with pytest.raises(ValueError):
        domain_cell_diameter(images, masks[:2])


# ---------------------------------------------------------------------------------------------- real data


def _site(name: str) -> Path:
    folder = DATA / name
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder} (set STAINSHIFT_DATA to the shared data folder)")
    return folder


@pytest.mark.realdata
def test_real_jtsc_threshold_agrees_with_masks():
    folder = _site("jtsc_tecom")
    paths = [p for p in list_images(folder) if "masks" not in p.parts][::15][:20]
    ratios = []
    for path in paths:
        estimate = estimate_cell_diameter(read_image(path))
        truth = cell_diameter_from_mask(read_mask(folder / "masks" / path.parent.name / f"{path.stem}.png"))
        assert estimate is not None and truth is not None
        ratios.append(estimate / truth)
    assert len(ratios) == 20
    assert abs(np.median(ratios) - 1) < 0.20
    assert np.mean(np.abs(np.array(ratios) - 1) < 0.20) >= 0.8


@pytest.mark.realdata
def test_real_pbc_median_diameter():
    folder = _site("pbc_barcelona")
    estimate = domain_cell_diameter(list_images(folder), max_images=32, seed=0)
    assert estimate.n >= 30
    assert estimate.median == pytest.approx(130, rel=0.25)
