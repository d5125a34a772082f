"""COCO instance annotations from instance masks, and back.

An instance mask holds ``class_id * 1000 + k`` per cell (see :mod:`stainshift.synth.masks`); each id becomes
one COCO annotation (category = class id, RLE or polygon segmentation, bbox, area, and the ``instance_id``) that
``pycocotools`` loads and decodes back to the same pixels (RLE exactly; polygons trace the pixel edges and
decode to the same pixels for ordinary outlines). A cell no polygon describes well (a sliver, or one with holes
from a cell on top of it) keeps its RLE, so every annotation decodes.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import numpy as np

from stainshift.synth.masks import INSTANCE_STRIDE

POLYGON_MIN_IOU = 0.7  # below this a polygon misdescribes its cell, and the annotation keeps its RLE


class Segmentation(StrEnum):
    RLE = "rle"
    POLYGON = "polygon"


def _polygons(binary: np.ndarray) -> list[list[float]]:
    """Outer outlines along the pixels' edges: traced on a 2x nearest-neighbour upsampling, whose outline pixel
    centres lie a quarter pixel inside the original edges, so pycocotools fills exactly the original pixels."""
    import cv2

    doubled = cv2.resize(binary.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [[(float(v) + 0.5) / 2.0 for v in c.reshape(-1)] for c in contours if len(c) >= 3]


def _polygon_iou(polygons: list[list[float]], binary: np.ndarray) -> float:
    from pycocotools import mask as mask_utils

    if not polygons:
        return 0.0
    h, w = binary.shape
    drawn = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))).astype(bool)
    inside = binary.astype(bool)
    return float((drawn & inside).sum() / max((drawn | inside).sum(), 1))


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
        segmentation: object = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
        if encoding is Segmentation.POLYGON:
            polygons = _polygons(binary)
            if _polygon_iou(polygons, binary) >= POLYGON_MIN_IOU:
                segmentation = polygons
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
