"""``stainshift synth generate``: images from masks by a trained mask-to-image model, in a layout a domain reads.

::

    <out>/images/<class>/<stem>.png   generated images (a domain's folder: `domains add NAME <out>/images
                                      --masks <out>/masks`)
    <out>/masks/<class>/<stem>.png    the value-coded masks they were generated from (0 / 128 / 255)
    <out>/instance/<stem>.png         16-bit instance ids (class_id * 1000 + k)
    <out>/semantic/<stem>.png         0 background, 1 red cell, 2 cytoplasm, 3 nucleus
    <out>/coco.json                   COCO instance annotations of every image
    <out>/manifest.json               kind, model, run, epoch, checkpoint hash, seed, style; per image its mask file

The masks come from a folder written by ``stainshift synth masks`` (its semantic and instance maps) or from any
folder of value-coded mask PNGs (a domain's masks; class = sub-folder, instances = connected cells). Every image
says in its manifest entry that it is generated, by what and from which mask, so it is never mistaken for a real
one. Image ``i`` depends on (``seed``, ``i``) alone: a stopped run resumes with the same arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from stainshift import runs
from stainshift.atomic import atomic_write_text
from stainshift.data.datasets import rescale_mask, training_factor
from stainshift.data.io import IMAGE_EXTENSIONS, read_mask, write_image
from stainshift.errors import DataError, StainshiftError
from stainshift.models.kinds import Modality
from stainshift.models.registry import entry, load_epoch
from stainshift.project import Project
from stainshift.synth.coco import Segmentation, coco_dataset
from stainshift.synth.compose import compose_field
from stainshift.synth.dataset import MANIFEST, read_mask_set, write_instance_mask
from stainshift.synth.encoding import check_label_map, regions, semantic_to_values
from stainshift.synth.masks import INSTANCE_STRIDE, RED_CELL, RED_CLASS_ID, SEMANTIC

KIND = "stainshift generated images"
GENERATION_VERSION = 2
FIELD = "field"  # class folder of masks that hold other than exactly one white cell
MAX_SIDE = 8192


@dataclass
class MaskItem:
    """One mask to generate from: its value coding, instance and semantic maps, class folder and origin."""

    stem: str
    values: np.ndarray      # uint8, 0 / 128 / 255
    instance: np.ndarray    # uint16, class_id * 1000 + k
    semantic: np.ndarray    # uint8, SEMANTIC ids
    cls: str
    source: Path


def _synthetic_items(folder: Path) -> tuple[list[MaskItem], dict[int, str]]:
    manifest, categories, instances = read_mask_set(folder)
    whites = [name for name in categories.values() if name != RED_CELL]
    items = []
    for meta, instance in zip(manifest["masks"], instances, strict=True):
        path = folder / meta["semantic"]
        semantic = read_mask(path)
        if semantic.shape != instance.shape:
            raise DataError(f"{path}: semantic map is {semantic.shape[1]}x{semantic.shape[0]} px, its instance map "
                            f"{instance.shape[1]}x{instance.shape[0]}; write the folder again with `synth masks`")
        present = [c for c in whites if meta.get("cells", {}).get(c)]
        one = len(present) == 1 and meta["cells"][present[0]] == 1
        # red cells are not in the generators' input (no real training mask has them), so none is annotated:
        # the generator paints red cells where it learnt to, not where the mask had them
        red = instance // INSTANCE_STRIDE == RED_CLASS_ID
        instance = np.where(red, 0, instance).astype(np.uint16)
        semantic = np.where(semantic == SEMANTIC["red_cell"], SEMANTIC["background"], semantic).astype(np.uint8)
        items.append(MaskItem(meta["stem"], semantic_to_values(semantic), instance, semantic,
                              present[0] if one else FIELD, path))
    return items, categories


def _plain_items(folder: Path) -> tuple[list[MaskItem], dict[int, str]]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", *IMAGE_EXTENSIONS) and p.is_file())
    if not files:
        raise DataError(f"{folder}: no mask files; pass a folder written by `stainshift synth masks` or a folder "
                        "of value-coded mask PNGs (0 background, 128 cytoplasm, 255 nucleus)")
    classes = sorted({p.parent.name if p.parent != folder else "cell" for p in files})
    categories = {i + 2: c for i, c in enumerate(classes)}
    ids = {c: i for i, c in categories.items()}
    items = []
    for p in files:
        values = read_mask(p)
        check_label_map(values, p)
        cls = p.parent.name if p.parent != folder else "cell"
        region = regions(torch.from_numpy(values.astype(np.float32))[None, None])[0].numpy()
        n, comps = cv2.connectedComponents((region > 0).astype(np.uint8), connectivity=8)
        instance = np.where(comps > 0, ids[cls] * INSTANCE_STRIDE + comps, 0).astype(np.uint16)
        semantic = np.array([SEMANTIC["background"], SEMANTIC["cytoplasm"], SEMANTIC["nucleus"]],
                            dtype=np.uint8)[region]
        stem = p.relative_to(folder).with_suffix("").as_posix().replace("/", "_")
        items.append(MaskItem(stem, np.array([0, 128, 255], dtype=np.uint8)[region], instance, semantic,
                              cls if n - 1 == 1 else FIELD, p))
    return items, categories


def read_masks(folder: str | Path) -> tuple[list[MaskItem], dict[int, str]]:
    """The masks of ``folder`` (synthetic-mask folder or plain mask PNGs) and their categories {class_id: name}."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; pass --masks a folder written by `stainshift synth masks` or "
                        "one of value-coded mask PNGs")
    items, categories = (_synthetic_items(folder) if (folder / MANIFEST).exists() else _plain_items(folder))
    for item in items:
        h, w = item.values.shape
        if min(h, w) < 8 or max(h, w) > MAX_SIDE:
            raise DataError(f"{item.source}: mask is {w}x{h} px; generators take masks from 8 to {MAX_SIDE} px a "
                            "side: draw them at the domain's pixel size (`synth masks --size WxH`)")
    return items, categories


SIZE_RATIO_MAX = 2.0  # masks' cells up to this factor larger or smaller than the domain's are accepted


def white_cell_diameter(item: MaskItem) -> float | None:
    """Median equivalent diameter (px) of the mask's white cells (instances with a value-coded footprint)."""
    ids, areas = np.unique(item.instance[(item.values > 0) & (item.instance > 0)], return_counts=True)
    keep = ids // INSTANCE_STRIDE != 1  # class 1: red cells
    return float(np.median(2 * np.sqrt(areas[keep] / np.pi))) if keep.any() else None


def check_cell_size(project: Project, domain: str, items: list[MaskItem]) -> None:
    """A one-line error when the masks' cells are drawn at another scale than the domain's cells (the generator
    learnt cells of the domain's size)."""
    from stainshift.data.scale import domain_diameter

    expected = domain_diameter(project, domain)
    if not expected:
        return
    for item in items:
        d = white_cell_diameter(item)
        if d is not None and not 1 / SIZE_RATIO_MAX <= d / expected <= SIZE_RATIO_MAX:
            raise DataError(f"{item.source}: its cells are {d:.0f} px across, domain '{domain}''s {expected:.0f} px; "
                            f"draw the masks at the domain's scale (`stainshift synth masks --domain {domain}`, or "
                            f"--scale {expected / d:.2f})")


def _seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])


def generate(project: Project, domain: str, masks: str | Path, out: str | Path, *, method: str = "pix2pix",
             epoch: str | int = "best", run_id: str | None = None, style: int | None = None, n: int | None = None,
             seed: int = 0, device: str = "cpu", progress: bool = False, masks_from: str | None = None,
             cell_by_cell: bool = False) -> dict[str, Any]:
    """Generate one image per mask (the first ``n``) with ``method``'s chosen epoch; returns the manifest.
    ``masks_from``: the source domain of an unpaired model's run (``maskcyclegan``; default ``domain``).
    ``cell_by_cell``: compose each field from single-cell generations (:mod:`stainshift.synth.compose`), for
    models trained on single cells."""
    from stainshift.device import resolve_device
    from stainshift.provenance import code_version
    from stainshift.train.checkpoints import file_hash

    if entry(method).consumes is not Modality.MASK:
        raise StainshiftError(f"{method} translates images, not masks; `synth generate` takes a mask-to-image "
                              "model (pix2pix, pix2pixhd, maskcyclegan)")
    from stainshift.models.registry import model_class

    if model_class(method).data_regime.masks_from_source and not masks_from:
        raise StainshiftError(f"{method} runs are named by the domain whose masks they learnt: pass --masks-from "
                              "DOMAIN (as given to `synth train --masks-from`)")
    src = masks_from or domain
    checkpoint, chosen, _ = runs.resolve_epoch(project, src, domain, method, epoch, run_id)
    translator, meta = load_epoch(checkpoint)
    if style is not None:
        if getattr(translator, "n_styles", 0) <= 0:
            raise StainshiftError(f"--style {style}: {checkpoint} has no style clusters (only pix2pixhd with its "
                                  "feature encoder has them); leave --style out")
        if not 0 <= style < translator.n_styles:
            raise StainshiftError(f"--style {style}: {checkpoint} has styles 0 to {translator.n_styles - 1}")
        translator.style = style
    items, categories = read_masks(masks)
    check_cell_size(project, src, items)
    if n is not None:
        if not 1 <= n <= len(items):
            raise StainshiftError(f"--n {n}: {masks} holds {len(items)} masks; pass --n 1 to {len(items)}")
        items = items[:n]
    seen = meta["preprocessing"]["src" if src != domain else "dst"]  # how training scaled the masks' domain
    scale, load_size = float(seen["scale"]), seen.get("load_size")
    out = Path(out)
    config = {"version": GENERATION_VERSION, "method": method, "run": meta.get("run"), "epoch": chosen,
              "checkpoint": str(checkpoint.resolve()), "checkpoint_hash": file_hash(checkpoint), "seed": int(seed),
              "style": style, "masks_folder": str(Path(masks).resolve()), "scale": scale, "domain": domain,
              "masks_from": src, "cell_by_cell": cell_by_cell, "n": len(items)}
    done: dict[str, dict] = {}
    if (out / MANIFEST).exists():
        previous = json.loads((out / MANIFEST).read_text())
        if previous.get("kind") != KIND or previous.get("config") != config:
            raise StainshiftError(f"{out}: holds images generated with other arguments or another checkpoint; "
                                  "pass another --out (nothing there was changed)")
        done = {e["stem"]: e for e in previous["images"]}
    elif out.exists() and any(out.iterdir()):
        raise StainshiftError(f"{out}: folder is not empty and holds no {MANIFEST}; pass an empty or new --out")

    dev = resolve_device(device)
    translator = translator.to(dev).eval()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=f"synth generate ({method} epoch {chosen})", unit="image")
    entries, coco_items = [], []
    for i, item in enumerate(items):
        files = {"image": f"images/{item.cls}/{item.stem}.png", "mask": f"masks/{item.cls}/{item.stem}.png",
                 "instance": f"instance/{item.stem}.png", "semantic": f"semantic/{item.stem}.png"}
        if not (item.stem in done and all((out / f).exists() for f in files.values())):
            torch.manual_seed(_seed(seed, i))  # noise channels and sampled styles
            # without a project cell diameter, training resized each image's shorter side to load_size
            factor = training_factor(item.values.shape, scale, load_size)
            small = rescale_mask(item.values, factor)
            if cell_by_cell:
                y = compose_field(translator, small, rescale_mask(item.instance, factor),
                                  int(meta["options"]["crop_size"]), dev)
            else:
                x = torch.from_numpy(small.astype(np.float32))[None, None].to(dev)
                with torch.inference_mode():
                    if translator.reads_instances:  # pix2pixHD: touching cells stay apart
                        ids = torch.from_numpy(rescale_mask(item.instance, factor).astype(np.int64))[None].to(dev)
                        y = translator.translate_instances(x, ids)
                    else:
                        y = translator(x)
                    y = y[0].permute(1, 2, 0).clamp(0, 1).mul(255).round().byte().cpu().numpy()
            h, w = item.values.shape
            if y.shape[:2] != (h, w):  # back to the mask's own pixel size, so image and mask files align
                y = cv2.resize(y, (w, h), interpolation=cv2.INTER_AREA if y.shape[0] > h else cv2.INTER_LINEAR)
            image = y
            write_image(out / files["image"], image)
            write_image(out / files["mask"], item.values)
            write_instance_mask(out / files["instance"], item.instance)
            write_image(out / files["semantic"], item.semantic)
        entries.append({"stem": item.stem, **files, "class": item.cls, "source_mask": str(item.source),
                        "generated": True, "seed": _seed(seed, i)})
        coco_items.append((files["image"], item.instance))
        if bar is not None:
            bar.update(1)
        if (i + 1) % 25 == 0:
            _write_manifest(out, config, categories, entries, code_version())
    if bar is not None:
        bar.close()
    coco = coco_dataset(coco_items, categories, Segmentation.RLE,
                        description=f"{KIND}: {method} epoch {chosen} of run {meta.get('run')}")
    atomic_write_text(out / "coco.json", json.dumps(coco))
    return _write_manifest(out, config, categories, entries, code_version())


def _write_manifest(out: Path, config: dict, categories: dict[int, str], entries: list[dict], version: str
                    ) -> dict[str, Any]:
    manifest = {"kind": KIND, "code": version, "config": config,
                "categories": {str(k): v for k, v in categories.items()}, "semantic": SEMANTIC, "images": entries}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest
