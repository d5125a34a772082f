"""Shared fixtures: the real-data root and small image trees written to tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from stainshift.data.io import write_image

# Test tensors are tiny: one thread avoids OpenMP spin/wait overhead, which costs 100x under a loaded machine.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # and the CLI, called in-process, keeps it (see cli.main.free_cores)


def data_root() -> Path:
    """../shared/data next to the repo, or $STAINSHIFT_DATA."""
    return Path(os.environ.get("STAINSHIFT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def require_data(site: str) -> Path:
    folder = data_root() / site
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder} (set STAINSHIFT_DATA to the shared data folder)")
    return folder


def cell_image(rng: np.random.Generator, size: int = 40, tint: tuple[int, int, int] = (200, 150, 200)) -> np.ndarray:
    """A light background with a darker disc in the middle and some noise."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    image = np.full((size, size, 3), 235, np.float32)
    image[disc] = tint
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_domain(root: Path, counts: dict[str, int], seed: int = 0, size: int = 40, ext: str = ".png",
                masks: bool = False) -> Path:
    """Write a domain folder with ``counts`` images per class (and value-coded masks if asked)."""
    rng = np.random.default_rng(seed)
    for label, n in counts.items():
        for i in range(n):
            write_image(root / label / f"{label}_{i:03d}{ext}", cell_image(rng, size))
            if masks:
                mask = np.zeros((size, size), np.uint8)
                mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 128
                mask[size // 3: 2 * size // 3, size // 3: 2 * size // 3] = 255
                write_image(root / "masks" / label / f"{label}_{i:03d}.png", mask)
    return root


# A CycleGAN small enough to train a few epochs in seconds on one CPU thread.
TINY_CYCLEGAN = {"ngf": 4, "ndf": 4, "n_blocks": 1, "crop_size": 32, "load_size": 32, "batch_size": 1,
                 "epochs_decay": 0}


def simulated_project(root: Path, per_class: int, split: tuple[float, float, float], masks: bool = False,
                      extra: tuple[str, ...] = ()):
    """Two simulated hospitals (clinic, hgtp; lymphocytes and eosinophils) named in a saved project file.

    ``extra`` names further domains the caller has already written under ``root/data``.
    """
    from stainshift.data.simulate import simulate
    from stainshift.project import DomainConfig, Project, save_project

    simulate(root / "data", hospitals=["clinic", "hgtp"], per_class=per_class, size=40, seed=0,
             classes=("lymphocyte", "eosinophil"))
    project = Project(file=root / "stainshift.toml", split=split)
    for name in ("clinic", "hgtp", *extra):
        mask_dir = f"data/{name}/masks" if masks and name in ("clinic", "hgtp") else None
        project = project.with_domain(DomainConfig(name, f"data/{name}", root, masks=mask_dir))
    save_project(project)
    return project


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
