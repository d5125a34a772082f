"""Whole smear fields as a domain: locate each field's white cells once, then frame one cell per field.

A domain with ``fields = true`` holds whole fields (e.g. 640x480, a white cell anywhere among red cells) in its class
folders. Its cells are found once per field, from the field's mask when it has one (value-coded, as the other sites'
masks) and else by :func:`~stainshift.data.locate.locate_cells`, and cached in ``runs/fields/<domain>.json``
(a field is located again when its file's size or modification time changes). The labelled cell of a field is its
largest (the locator orders cells by nucleus area); its sample's ``box`` is a square of
:data:`FRAME_DIAMETERS` cell diameters centred on it (filled with the field's background past its edge), so that
after scale
harmonization every step sees it framed as a ready-made single-cell crop. A field where no cell was found keeps its
centre square, and ``domains inspect`` counts those.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm.auto import tqdm

from stainshift.atomic import atomic_write_text
from stainshift.data.domains import Sample, scan_domain
from stainshift.data.io import cell_regions, read_image, read_mask
from stainshift.data.locate import CellBox, locate_cells
from stainshift.errors import DataError, ImageReadError
from stainshift.project import Project
from stainshift.runs import fields_cache

FIELDS_VERSION = 1
# PBC's framing (360 px crops around cells of 129.5 px median diameter): the target most runs translate to, and the
# framing the classifiers trained there expect after their centre crop.
FRAME_DIAMETERS = 2.8
_SAVE_EVERY = 50  # fields between cache writes: an interrupted locate resumes from the last write


@dataclass(frozen=True)
class FieldCells:
    """The white cells of one field, largest first, and where they came from ("mask" or "locator")."""

    key: str
    width: int
    height: int
    cells: tuple[CellBox, ...]
    source: str

    @property
    def primary(self) -> CellBox | None:
        return self.cells[0] if self.cells else None


def cells_from_mask(mask: np.ndarray) -> list[CellBox]:
    """The cells of a value-coded field mask (0 background, ~128-155 cytoplasm, 255 nucleus), largest nucleus first."""
    regions = cell_regions(mask) if mask.max(initial=0) > 2 else np.asarray(mask, np.uint8)
    cells = cv2.morphologyEx((regions > 0).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cells, connectivity=8)
    if n <= 1:
        return []
    largest = stats[1:, cv2.CC_STAT_AREA].max()
    out = []
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] < 0.25 * largest:  # specks and cut-off fragments, as the locator drops them
            continue
        x, y, w, h = (int(stats[k, i]) for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                   cv2.CC_STAT_HEIGHT))
        nucleus = int(((labels == k) & (regions == 2)).sum())
        out.append(CellBox(x, y, w, h, nucleus, True))
    return sorted(out, key=lambda c: -c.nucleus_area)


def _stamp(sample: Sample) -> list[int]:
    stat = sample.path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns]
    if sample.mask is not None:
        mstat = sample.mask.stat()
        stamp += [mstat.st_size, mstat.st_mtime_ns]
    return stamp


def _locate(sample: Sample) -> FieldCells:
    image = read_image(sample.path)
    h, w = image.shape[:2]
    if sample.mask is not None:
        mask = read_mask(sample.mask)
        if mask.shape[:2] != (h, w):
            raise DataError(f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} px, its field {w}x{h}; "
                            "masks must have their field's size")
        return FieldCells(sample.key, w, h, tuple(cells_from_mask(mask)), "mask")
    return FieldCells(sample.key, w, h, tuple(locate_cells(image)), "locator")


def _load(path) -> dict:
    if path.exists():
        try:
            raw = json.loads(path.read_text())
            if raw.get("version") == FIELDS_VERSION:
                return raw["fields"]
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a damaged cache is rebuilt, never trusted
    return {}


def _from_entry(key: str, entry: dict) -> FieldCells:
    return FieldCells(key, entry["width"], entry["height"], tuple(CellBox(*c) for c in entry["cells"]),
                      entry["source"])


def field_cells(project: Project, name: str, samples: Sequence[Sample] | None = None, progress: bool = False,
                ) -> dict[str, FieldCells]:
    """The located cells of every field of domain ``name`` (from the cache where the file is unchanged).

    Unreadable fields are left out here (the split step lists and handles them)."""
    samples = list(samples) if samples is not None else scan_domain(project.domain(name))
    path = fields_cache(project, name)
    cached = _load(path)
    entries: dict[str, dict] = {}
    todo = []
    for sample in samples:
        stamp = _stamp(sample)
        entry = cached.get(sample.key)
        if entry is not None and entry.get("stamp") == stamp:
            entries[sample.key] = entry
        else:
            todo.append((sample, stamp))

    def save() -> None:
        atomic_write_text(path, json.dumps({"version": FIELDS_VERSION, "domain": name, "fields": entries}))

    for i, (sample, stamp) in enumerate(tqdm(todo, desc=f"locating cells in {name}", unit="field",
                                             disable=not progress or not todo, leave=False)):
        try:
            found = _locate(sample)
        except ImageReadError:
            continue
        entries[sample.key] = {"stamp": stamp, "width": found.width, "height": found.height, "source": found.source,
                               "cells": [list(dataclasses.astuple(c)) for c in found.cells]}
        if (i + 1) % _SAVE_EVERY == 0:
            save()
    if todo or set(cached) - set(entries):
        save()
    return {key: _from_entry(key, entry) for key, entry in entries.items()}


def located_diameter(cells: dict[str, FieldCells]) -> dict:
    """Median cell diameter (px) over the fields' primary cells: the mean side of each outlined cell's box."""
    sizes = [(c.primary.w + c.primary.h) / 2.0 for c in cells.values() if c.primary is not None and c.primary.segmented]
    if not sizes:
        return {"median": None, "p25": None, "p75": None, "n": 0, "source": "no cell located"}
    sources = sorted({c.source for c in cells.values()})
    p25, median, p75 = np.percentile(sizes, [25, 50, 75])
    return {"median": float(median), "p25": float(p25), "p75": float(p75), "n": len(sizes),
            "source": f"cells located in fields ({', '.join(sources)})"}


def frame(cells: FieldCells | None, side: float) -> tuple[int, int, int, int] | None:
    """A ``side``-px square centred on the field's primary cell (on the field's centre when it has none); the part
    past the field's edge is filled with the field's background when read
    (:func:`~stainshift.data.domains.crop_box`)."""
    if cells is None:
        return None
    s = max(1, round(side))
    cx, cy = (cells.width / 2.0, cells.height / 2.0) if cells.primary is None else cells.primary.centre
    return round(cx - s / 2), round(cy - s / 2), s, s


def frame_samples(project: Project, name: str, samples: Sequence[Sample], progress: bool = False) -> list[Sample]:
    """``samples`` with their ``box`` set to each field's framed primary cell (unchanged for non-field domains)."""
    if not project.domain(name).fields:
        return list(samples)
    from stainshift.data.scale import domain_diameter

    cells = field_cells(project, name, samples, progress)
    diameter = domain_diameter(project, name)
    if diameter is None:
        raise DataError(f"domain '{name}': no white cell was located in its fields; set cell_diameter = <px> under "
                        f"[domains.{name}] in {project.file}, or check that the images are stained smear fields")
    side = FRAME_DIAMETERS * diameter
    return [dataclasses.replace(s, box=frame(cells.get(s.key), side)) for s in samples]


def cells_per_field(cells: dict[str, FieldCells]) -> dict[str, int]:
    """How many fields hold 0, 1, 2 and 3 or more located cells."""
    counts = Counter(min(len(c.cells), 3) for c in cells.values())
    return {("3+" if k == 3 else str(k)): counts.get(k, 0) for k in range(4)}
