"""A folder of synthetic masks: ``stainshift synth masks`` writes it, the mask-to-image generators read it.

::

    <out>/instance/<stem>.png     16-bit instance ids (class_id * 1000 + k)
    <out>/semantic/<stem>.png     0 background, 1 red cell, 2 cytoplasm, 3 nucleus
    <out>/colour/<stem>.png       colour-coded cells (one hue per class, touching cells in different shades)
    <out>/images/<stem>.png       simulator renders, when asked for (``--render HOSPITAL``)
    <out>/coco.json               COCO instance annotations of every mask
    <out>/manifest.json           what was asked for, the database, the categories, one entry per mask

Mask ``i`` is drawn from the random stream ``(seed, i)`` alone, so a run that stops can be resumed (the masks
already written are kept) and ``--n 10`` gives the first ten masks of ``--n 100``. A folder is resumed only with
the same arguments, the same shape database (its inputs' hash) and the same :data:`MASKS_VERSION`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from stainshift.atomic import atomic_path, atomic_write_text
from stainshift.data.io import write_image
from stainshift.errors import DataError, StainshiftError
from stainshift.synth.coco import Segmentation, coco_dataset
from stainshift.synth.masks import SEMANTIC, MaskSpec, categories_for, check_instance_ids, check_spec, compose
from stainshift.synth.shapes import ShapeDatabase

MANIFEST = "manifest.json"
COCO = "coco.json"
KIND = "stainshift synthetic masks"
MASKS_VERSION = 1  # bumped when a change to shapes, layouts or masks alters what a seed draws


def read_instance_mask(path: str | Path, categories: dict[int, str]) -> np.ndarray:
    """A 16-bit instance mask from ``path``, its ids checked against the convention."""
    import cv2

    path = Path(path)
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(f"{path}: not a readable PNG instance mask; re-export it as a 16-bit PNG")
    if array.ndim != 2:
        raise DataError(f"{path}: an instance mask has one channel (16-bit ids), this one has {array.shape[2]}; "
                        "write ids class_id*1000+k into a single-channel 16-bit PNG")
    check_instance_ids(array, categories, path)
    return array.astype(np.uint16)


def write_instance_mask(path: str | Path, instance: np.ndarray) -> Path:
    """Write a 16-bit PNG atomically."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(instance.astype(np.uint16)))
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode this instance mask")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return Path(path)


def _categories(raw: object, where: Path) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{where}: no categories ({{class_id: name}}); write the folder with `stainshift synth masks`")
    try:
        return {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise DataError(f"{where}: category ids must be integers, got {sorted(map(str, raw))}") from None


def _load_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        raise DataError(f"{folder}: no {MANIFEST}; give a folder written by `stainshift synth masks`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); write the folder again with `stainshift synth masks`"
                        ) from None
    masks = manifest.get("masks") if isinstance(manifest, dict) else None
    if not isinstance(masks, list) or not all(isinstance(m, dict) and "instance" in m and "stem" in m
                                              for m in masks):
        raise DataError(f"{path}: not a synthetic-mask manifest (it needs a list of masks with their files); "
                        "write the folder again with `stainshift synth masks`")
    return manifest


def _stem(i: int) -> str:
    return f"mask_{i:05d}"


def _config(db: ShapeDatabase, spec: MaskSpec, seed: int, render: str | None, encoding: Segmentation
            ) -> dict[str, Any]:
    spec_dict = asdict(spec)
    spec_dict["size"] = list(spec.size)
    return {"version": MASKS_VERSION, "spec": json.loads(json.dumps(spec_dict, default=str)), "seed": int(seed),
            "render": render, "encoding": str(encoding),
            "database": {"name": db.name, "key": db.key, "counts": db.counts(), "sources": db.sources}}


def write_mask_set(db: ShapeDatabase, spec: MaskSpec, n: int, out: str | Path, *, seed: int = 0,
                   render: str | None = None, encoding: Segmentation = Segmentation.RLE,
                   progress: bool = False) -> dict[str, Any]:
    """Write ``n`` synthetic masks (and simulator renders when ``render`` names a hospital) to ``out``.

    Resumes a folder written with the same arguments; refuses one written with others. Returns the manifest.
    """
    from stainshift.provenance import code_version

    if n < 1:
        raise StainshiftError(f"--n {n}: pass the number of masks to write (>= 1)")
    check_spec(db, spec)
    if render:
        from stainshift.data.simulate import get_hospital

        get_hospital(render)
    out = Path(out)
    config = _config(db, spec, seed, render, encoding)
    done: dict[str, dict] = {}
    if (out / MANIFEST).exists():
        previous = _load_manifest(out)
        if previous.get("config") != config:
            raise StainshiftError(f"{out}: holds synthetic masks written with other arguments, another shape "
                                  "database or older code; pass another --out (nothing there was changed)")
        done = {m["stem"]: m for m in previous["masks"]}
        if len(done) > n:
            raise StainshiftError(f"{out}: already holds {len(done)} masks; pass --n {len(done)} or more to resume, "
                                  "or another --out for fewer")
    elif out.exists() and any(out.iterdir()):
        raise StainshiftError(f"{out}: folder is not empty and holds no {MANIFEST}; pass an empty or new --out")
    categories = categories_for(db)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="synth masks", unit="mask")
    entries, coco_items = [], []
    for i in range(n):
        stem = _stem(i)
        files = {"instance": f"instance/{stem}.png", "semantic": f"semantic/{stem}.png",
                 "colour": f"colour/{stem}.png"}
        if render:
            files["image"] = f"images/{stem}.png"
        if stem in done and all((out / f).exists() for f in files.values()):
            entries.append(done[stem])
            coco_items.append((files.get("image", files["instance"]),
                               read_instance_mask(out / files["instance"], categories)))
        else:
            rng = np.random.default_rng([int(seed), i])
            mask = compose(db, spec, rng)
            write_instance_mask(out / files["instance"], mask.instance)
            write_image(out / files["semantic"], mask.semantic)
            write_image(out / files["colour"], mask.colour)
            if render:
                from stainshift.synth.render import render_mask

                image = render_mask(mask, render, rng, white_px=db.diameter() * spec.scale)
                write_image(out / files["image"], image)
            entries.append({"stem": stem, **files, "cells": {c: mask.count(c) for c in categories.values()},
                            "dropped": mask.dropped})
            coco_items.append((files.get("image", files["instance"]), mask.instance))
        if bar is not None:
            bar.update(1)
        if (i + 1) % 25 == 0:  # a stopped run keeps what it wrote
            _write_manifest(out, config, categories, entries, code_version())
    if bar is not None:
        bar.close()
    coco = coco_dataset(coco_items, categories, encoding, description=f"{KIND} from database {db.name!r}")
    atomic_write_text(out / COCO, json.dumps(coco))
    return _write_manifest(out, config, categories, entries, code_version())


def _write_manifest(out: Path, config: dict, categories: dict[int, str], entries: list[dict],
                    version: str) -> dict[str, Any]:
    manifest = {"kind": KIND, "code": version, "config": config,
                "categories": {str(k): v for k, v in categories.items()}, "semantic": SEMANTIC,
                "masks": entries}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def read_mask_set(folder: str | Path) -> tuple[dict[str, Any], dict[int, str], list[np.ndarray]]:
    """The manifest of a synthetic-mask folder, its categories and its instance masks (every id checked)."""
    folder = Path(folder)
    manifest = _load_manifest(folder)
    categories = _categories(manifest.get("categories"), folder / MANIFEST)
    masks = [read_instance_mask(folder / entry["instance"], categories) for entry in manifest["masks"]]
    return manifest, categories, masks


def export_coco(folder: str | Path, encoding: Segmentation = Segmentation.RLE, out: str | Path | None = None
                ) -> Path:
    """(Re)write the COCO annotations of a synthetic-mask folder from its instance masks."""
    folder = Path(folder)
    manifest, categories, masks = read_mask_set(folder)
    items = [(e.get("image", e["instance"]), m) for e, m in zip(manifest["masks"], masks, strict=True)]
    target = Path(out) if out else folder / COCO
    atomic_write_text(target, json.dumps(coco_dataset(items, categories, encoding)))
    return target
