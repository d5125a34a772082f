"""How well the white-cell locator finds cells in whole smear fields (issue 14, part 1: measured, not yet wired in).

    python benchmarks/locate_cells.py         # -> benchmarks/results/locate_cells.md (+ .json, .png)

Ground truth, both from ../shared/data:
- bccd_voc: 364 fields of 640x480 with Pascal VOC boxes for every white cell (372 WBC boxes);
- bccd smears: 367 fields with nucleus/cytoplasm masks (the same BCCD fields, re-encoded and renumbered upstream).

Detection: a located box matches a ground-truth box at IoU >= 0.5 (each used once, best IoU first); recall,
precision, and the IoU of each ground-truth cell with its best box. Masks: the IoU of each mask cell's bounding
box with the best located box, and the share of the mask's nucleus pixels inside the located boxes. Nothing was
tuned on these fields: the blueness threshold is Otsu's; MIN_GROUP_FRACTION (0.25) is the speck rule of the
single-cell segmentation and WINDOW (1.5 nucleus extents) was written down before any field was looked at; a first
check on 40 VOC fields changed neither.
"""

from __future__ import annotations

import argparse
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
from provenance import record, require_clean
from synthesis import data_root

from stainshift.data.io import cell_regions, read_image, read_mask
from stainshift.data.locate import MIN_GROUP_FRACTION, WINDOW, locate_cells

RESULTS = Path(__file__).resolve().parent / "results"


def iou(a: tuple, b: tuple) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter) if inter > 0 else 0.0


def match(gt: list[tuple], pred: list[tuple], threshold: float = 0.5) -> tuple[int, list[float]]:
    """Greedy one-to-one matching by IoU; returns true positives and each ground-truth box's best IoU."""
    pairs = sorted(((iou(g, p), i, j) for i, g in enumerate(gt) for j, p in enumerate(pred)), reverse=True)
    used_g, used_p, tp = set(), set(), 0
    for v, i, j in pairs:
        if v < threshold or i in used_g or j in used_p:
            continue
        used_g.add(i)
        used_p.add(j)
        tp += 1
    best = [max((iou(g, p) for p in pred), default=0.0) for g in gt]
    return tp, best


def voc_boxes(path: Path) -> list[tuple]:
    out = []
    for obj in ET.parse(path).getroot().iter("object"):
        if (obj.findtext("name") or "").strip().upper() == "WBC":
            b = obj.find("bndbox")
            x0, y0, x1, y1 = (float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            out.append((x0, y0, x1 - x0, y1 - y0))
    return out


def mask_cells(regions: np.ndarray) -> list[tuple]:
    cells = cv2.morphologyEx((regions > 0).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(cells, connectivity=8)
    return [tuple(float(v) for v in stats[k, :4]) for k in range(1, n) if stats[k, 4] >= 400]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-dirty", action="store_true")
    parser.add_argument("--limit", type=int, help="only the first N fields of each set (a smoke run)")
    args = parser.parse_args()
    require_clean(args.allow_dirty, "locate_cells.py")
    prov = record({"limit": args.limit, "MIN_GROUP_FRACTION": MIN_GROUP_FRACTION, "WINDOW": WINDOW})
    root = data_root()
    t0 = time.time()

    voc = sorted((root / "bccd_voc" / "annotations").glob("*.xml"))[:args.limit]
    tp = n_pred = n_gt = 0
    best_ious, segmented, examples = [], 0, []
    per_field_counts = []
    for k, xml in enumerate(voc):
        image = read_image(root / "bccd_voc" / "images" / f"{xml.stem}.jpg")
        found = locate_cells(image)
        pred = [(c.x, c.y, c.w, c.h) for c in found]
        gt = voc_boxes(xml)
        hits, best = match(gt, pred)
        tp, n_pred, n_gt = tp + hits, n_pred + len(pred), n_gt + len(gt)
        best_ious += best
        segmented += sum(c.segmented for c in found)
        per_field_counts.append(len(pred))
        if k % 45 == 0 and len(examples) < 8:
            examples.append((image, gt, pred))
    voc_time = time.time() - t0

    smears = sorted((root / "bccd" / "masks" / "smears").glob("BloodImage_Mask_*.png"))[:args.limit]
    mask_ious, nucleus_cover = [], []
    for mask_path in smears:
        image_path = root / "bccd" / "smears" / (mask_path.stem.replace("_Mask", "") + ".jpg")
        if not image_path.exists():
            continue
        regions = cell_regions(read_mask(mask_path))
        pred = [(c.x, c.y, c.w, c.h) for c in locate_cells(read_image(image_path))]
        for cell in mask_cells(regions):
            mask_ious.append(max((iou(cell, p) for p in pred), default=0.0))
        nucleus = regions == 2
        inside = np.zeros_like(nucleus)
        for x, y, w, h in pred:
            inside[y:y + h, x:x + w] = True
        if nucleus.any():
            nucleus_cover.append(float((nucleus & inside).sum() / nucleus.sum()))

    recall, precision = tp / max(n_gt, 1), tp / max(n_pred, 1)
    best_ious = np.asarray(best_ious)
    summary = {
        "voc_fields": len(voc), "wbc_boxes": n_gt, "located": n_pred, "matched_iou50": tp,
        "recall_iou50": recall, "precision_iou50": precision,
        "recall_iou30": float((best_ious >= 0.3).mean()), "mean_best_iou": float(best_ious.mean()),
        "median_best_iou": float(np.median(best_ious)), "segmented_share": segmented / max(n_pred, 1),
        "cells_per_field": {str(k): per_field_counts.count(k) for k in sorted(set(per_field_counts))},
        "seconds_per_field": voc_time / max(len(voc), 1),
        "mask_fields": len(smears), "mask_cells": len(mask_ious), "mask_mean_iou": float(np.mean(mask_ious)),
        "mask_recall_iou50": float(np.mean(np.asarray(mask_ious) >= 0.5)),
        "nucleus_pixels_inside_boxes": float(np.mean(nucleus_cover)),
    }
    out = RESULTS if args.limit is None else Path("/tmp/locate_cells_quick")
    out.mkdir(parents=True, exist_ok=True)
    (out / "locate_cells.json").write_text(json.dumps({"provenance": prov, "summary": summary}, indent=1))

    tiles = []
    for image, gt, pred in examples:
        canvas = image.copy()
        for x, y, w, h in gt:
            cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)), (0, 170, 0), 3)
        for x, y, w, h in pred:
            cv2.rectangle(canvas, (int(x), int(y)), (int(x + w), int(y + h)), (30, 60, 230), 2)
        tiles.append(cv2.resize(canvas, (320, 240), interpolation=cv2.INTER_AREA))
    while len(tiles) % 4:
        tiles.append(np.full((240, 320, 3), 255, np.uint8))
    grid = np.concatenate([np.concatenate(tiles[i:i + 4], axis=1) for i in range(0, len(tiles), 4)], axis=0)
    cv2.imwrite(str(out / "locate_cells.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))

    s = summary
    lines = [
        "# White-cell locator on whole BCCD fields", "",
        f"Commit {prov['commit']} (dirty: {prov['dirty']}), started {prov['started']}, {prov['machine']}.",
        f"Command: `{prov['command']}`.", "",
        "| measure | value |", "|---|---|",
        f"| VOC fields / WBC boxes / located boxes | {s['voc_fields']} / {s['wbc_boxes']} / {s['located']} |",
        f"| recall at IoU >= 0.5 | {s['recall_iou50']:.3f} ({s['matched_iou50']} of {s['wbc_boxes']}) |",
        f"| precision at IoU >= 0.5 | {s['precision_iou50']:.3f} |",
        f"| recall at IoU >= 0.3 | {s['recall_iou30']:.3f} |",
        f"| IoU of each WBC box with its best located box: mean / median | {s['mean_best_iou']:.3f} / "
        f"{s['median_best_iou']:.3f} |",
        f"| located boxes outlined by the single-cell segmentation (the rest: widened nucleus box) | "
        f"{s['segmented_share']:.3f} |",
        f"| cells located per field (count: fields) | {s['cells_per_field']} |",
        f"| mask cells (bccd smears, {s['mask_fields']} fields): box IoU mean / recall at 0.5 | "
        f"{s['mask_mean_iou']:.3f} / {s['mask_recall_iou50']:.3f} ({s['mask_cells']} cells) |",
        f"| nucleus pixels of the masks inside located boxes | {s['nucleus_pixels_inside_boxes']:.3f} |",
        f"| seconds per field (2 cores) | {s['seconds_per_field']:.3f} |", "",
        "Green: VOC WBC boxes; blue: located cells.", "", "![located cells](locate_cells.png)", "",
    ]
    (out / "locate_cells.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
