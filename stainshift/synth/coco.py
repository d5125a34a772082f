"""COCO instance annotations from instance masks, and reading instance masks back with their convention checked.

An instance mask holds ``class_id * 1000 + k`` per cell (see :mod:`stainshift.synth.masks`); each id becomes
one COCO annotation (category = class id, RLE or polygon segmentation, bbox, area) that ``pycocotools`` loads
and decodes back to the same pixels (RLE exactly; polygons up to their outline's rasterisation).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

import numpy as np

from stainshift.errors import DataError
from stainshift.synth.masks import INSTANCE_STRIDE


class Segmentation(StrEnum):
    RLE = "rle"
    POLYGON = "polygon"


def check_instance_ids(instance: np.ndarray, categories: dict[int, str], where: str | Path) -> None:
    """Raise a one-line error when ``instance`` does not follow ``class_id * 1000 + k`` with a known class id."""
    ids = np.unique(instance)
    ids = ids[ids > 0]
    bad_k = ids[ids % INSTANCE_STRIDE == 0]
    unknown = sorted({int(c) for c in ids // INSTANCE_STRIDE} - set(categories))
    if len(bad_k) or unknown:
        example = int(bad_k[0]) if len(bad_k) else int(ids[np.isin(ids // INSTANCE_STRIDE, unknown)][0])
        raise DataError(f"{where}: instance id {example} does not follow class_id*1000+k (k >= 1, class ids "
                        f"{sorted(categories)}); write masks with `stainshift synth masks` or renumber them")


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

    from stainshift.atomic import atomic_path

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(instance.astype(np.uint16)))
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode this instance mask")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return Path(path)


def _polygons(binary: np.ndarray) -> list[list[float]]:
    import cv2

    contours, _ = cv2.findContours(binary.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = []
    for c in contours:
        if len(c) >= 3:
            # pixel centres -> pixel corners, so a rasterised polygon covers the pixels it came from
            out.append([float(v) + 0.5 for v in c.reshape(-1)])
    return out


def annotations_for(instance: np.ndarray, image_id: int, first_id: int,
                    encoding: Segmentation = Segmentation.RLE) -> list[dict]:
    """One COCO annotation per instance id of ``instance``, numbered from ``first_id``."""
    from pycocotools import mask as mask_utils

    ids = np.unique(instance)
    ids = ids[ids > 0]
    out = []
    for k, ident in enumerate(ids):
        binary = np.asfortranarray((instance == ident).astype(np.uint8))
        rle = mask_utils.encode(binary)
        area = float(mask_utils.area(rle))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        if encoding is Segmentation.RLE:
            segmentation: object = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
        else:
            segmentation = _polygons(binary)
        out.append({"id": first_id + k, "image_id": image_id, "category_id": int(ident) // INSTANCE_STRIDE,
                    "instance_id": int(ident), "segmentation": segmentation, "area": area, "bbox": bbox,
                    "iscrowd": 0})
    return out


def coco_dataset(images: Iterable[tuple[str, np.ndarray]], categories: dict[int, str],
                 encoding: Segmentation = Segmentation.RLE, description: str = "stainshift synthetic masks"
                 ) -> dict:
    """A COCO instances dictionary for ``(file_name, instance_mask)`` pairs; image ids count from 1."""
    out = {"info": {"description": description}, "images": [], "annotations": [],
           "categories": [{"id": int(k), "name": v, "supercategory": "cell"} for k, v in sorted(categories.items())]}
    next_ann = 1
    for image_id, (file_name, instance) in enumerate(images, start=1):
        h, w = instance.shape
        out["images"].append({"id": image_id, "file_name": file_name, "width": int(w), "height": int(h)})
        anns = annotations_for(instance, image_id, next_ann, encoding)
        next_ann += len(anns)
        out["annotations"].extend(anns)
    return out


def decode_annotations(coco: dict, image_id: int, shape: tuple[int, int]) -> np.ndarray:
    """Paint an image's annotations back into an instance mask (ids from ``instance_id``)."""
    from pycocotools import mask as mask_utils

    h, w = shape
    out = np.zeros((h, w), np.uint16)
    for ann in coco["annotations"]:
        if ann["image_id"] != image_id:
            continue
        seg = ann["segmentation"]
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else \
            {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
        out[mask_utils.decode(rle).astype(bool)] = ann["instance_id"]
    return out


def validate_categories(raw: object, where: str | Path) -> dict[int, str]:
    """``{id: name}`` from a manifest's categories (JSON keys are strings)."""
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{where}: no categories ({{class_id: name}}); write masks with `stainshift synth masks`")
    try:
        return {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise DataError(f"{where}: category ids must be integers, got {sorted(raw)}") from None
