"""Stratified, seeded train / val / test splits, saved to ``runs/splits/<domain>.csv`` and reused by every step.

Per class, images are shuffled with a generator seeded by (project seed, class name), so adding a class never moves
the images of another. Sizes are ``round(n * fraction)`` for val and test, the rest goes to train, with a floor for
small classes:

- 1 image: train only (it cannot be evaluated);
- 2 images: 1 train, 1 test (no validation image);
- 3 or more: at least one image in each of train, val and test (when that split's fraction is > 0).

Classes with fewer than 3 images are reported as warnings by :func:`make_split`.
"""

from __future__ import annotations

import json
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stainshift.atomic import atomic_write_text
from stainshift.data.domains import Sample, empty_classes, scan_domain
from stainshift.data.fields import frame_samples
from stainshift.data.io import read_image
from stainshift.errors import DataError, ImageReadError
from stainshift.project import Project
from stainshift.runs import split_file

SPLITS = ("train", "val", "test")


def _split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    _, f_val, f_test = fractions
    if n <= 1:
        return n, 0, 0
    if n == 2:
        return (1, 0, 1) if f_test > 0 else (1, 1, 0) if f_val > 0 else (2, 0, 0)
    n_val = max(1, round(n * f_val)) if f_val > 0 else 0
    n_test = max(1, round(n * f_test)) if f_test > 0 else 0
    while n - n_val - n_test < 1:  # tiny classes: keep at least one training image
        if n_test >= n_val and n_test > 1:
            n_test -= 1
        else:
            n_val -= 1
    return n - n_val - n_test, n_val, n_test


def make_split(samples: Sequence[Sample], fractions: Sequence[float], seed: int) -> pd.DataFrame:
    """Assign every sample to train / val / test, stratified by class. Columns: key, label, split."""
    rows = []
    labels = list(dict.fromkeys(s.label for s in samples))
    for label in labels:
        keys = sorted(s.key for s in samples if s.label == label)
        if len(keys) < 3:
            warnings.warn(f"class '{label}' has only {len(keys)} image(s): "
                          + ("train only" if len(keys) == 1 else "1 train, 1 test, no validation"), stacklevel=2)
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        order = rng.permutation(len(keys))
        n_train, n_val, _ = _split_sizes(len(keys), fractions)
        assigned = ["train"] * n_train + ["val"] * n_val + ["test"] * (len(keys) - n_train - n_val)
        split_of = {keys[i]: assigned[rank] for rank, i in enumerate(order)}
        rows += [(key, label, split_of[key]) for key in keys]
    return pd.DataFrame(rows, columns=["key", "label", "split"])


def save_split(frame: pd.DataFrame, path: Path, settings: dict) -> None:
    """Write the split CSV and a JSON sidecar recording how it was made (both atomic)."""
    atomic_write_text(path, frame.to_csv(index=False))
    atomic_write_text(path.with_suffix(".json"), json.dumps(settings, indent=2))


def find_unreadable(samples: Sequence[Sample], progress: bool = False) -> list[tuple[Sample, str]]:
    """Decode every image; return the ones that fail with their one-line reasons."""
    bad = []
    for sample in tqdm(samples, desc="checking images", unit="img", disable=not progress, leave=False):
        try:
            read_image(sample.path)
        except ImageReadError as exc:
            bad.append((sample, str(exc)))
    return bad


def domain_split(project: Project, domain: str, refresh: bool = False, skip_bad: bool = False,
                 progress: bool = False) -> pd.DataFrame:
    """The saved split of ``domain``, created on first use.

    Creating a split decodes every image once: a bad file stops it with a one-line error, unless ``skip_bad``,
    which leaves bad files out (listed in the JSON sidecar) so every later step skips them the same way.
    A saved split is reused as is; if the domain's files changed since, a :class:`DataError` asks for
    ``stainshift domains split NAME --refresh``.
    """
    return _split_and_samples(project, domain, refresh, skip_bad, progress)[0]


def _split_and_samples(project: Project, domain: str, refresh: bool = False, skip_bad: bool = False,
                       progress: bool = False) -> tuple[pd.DataFrame, list[Sample]]:
    """:func:`domain_split` plus the domain's samples, from a single scan of its folder."""
    config = project.domain(domain)
    samples = frame_samples(project, domain, scan_domain(config), progress)
    path = split_file(project, domain)
    if path.exists() and not refresh:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        excluded = set(json.loads(path.with_suffix(".json").read_text()).get("excluded", []))
        saved = set(frame["key"]) | excluded
        current = {s.key for s in samples}
        if saved != current:
            raise DataError(
                f"{path}: saved split of '{domain}' no longer matches its folder ({len(current - saved)} new, "
                f"{len(saved - current)} missing images); run `stainshift domains split {domain} --refresh`"
            )
        return frame, samples
    for label in empty_classes(config):
        warnings.warn(f"class folder '{label}' of '{domain}' holds no image: left out of the split", stacklevel=3)
    bad = find_unreadable(samples, progress)
    if bad and not skip_bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"{bad[0][1]}{more}; or pass --skip-bad to leave unreadable files out of the split")
    for _, reason in bad:
        warnings.warn(f"skipped: {reason}", stacklevel=3)
    excluded = {s.key for s, _ in bad}
    kept = [s for s in samples if s.key not in excluded]
    if not kept:
        raise DataError(f"{config.folder}: every image of domain '{domain}' is unreadable; check the folder")
    frame = make_split(kept, project.split_for(domain), project.seed)
    settings = {"domain": domain, "seed": project.seed, "fractions": list(project.split_for(domain)),
                "folder": str(config.folder), "n_images": len(kept), "excluded": sorted(excluded),
                "excluded_reasons": [reason for _, reason in bad]}
    save_split(frame, path, settings)
    return frame, samples


def samples_in(project: Project, domain: str, split: str | None = None) -> list[Sample]:
    """The domain's samples in ``split`` ("train", "val", "test" or None for all), in split-file order."""
    if split is not None and split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    frame, samples = _split_and_samples(project, domain)
    by_key = {s.key: s for s in samples}
    keys = frame["key"] if split is None else frame.loc[frame["split"] == split, "key"]
    return [by_key[k] for k in keys]
