"""The white-cell locator, on simulated fields whose cells are known (synthetic masks rendered by the simulator)."""

from __future__ import annotations

import numpy as np
import pytest

from stainshift.data.locate import locate_cells
from stainshift.synth.masks import INSTANCE_STRIDE, MaskSpec, compose
from stainshift.synth.render import render_mask
from stainshift.synth.shapes import RED_CELL, simulator_database


def _iou(a: tuple, b: tuple) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    return ix * iy / (aw * ah + bw * bh - ix * iy)


@pytest.mark.parametrize(("hospital", "seed"), [("clinic", 0), ("hgtp", 1), ("site3", 2)])
def test_locator_finds_every_white_cell_of_a_rendered_field(hospital, seed):
    db = simulator_database(per_class=6, classes=["neutrophil", "lymphocyte", "monocyte", "eosinophil"])
    for attempt in range(20):  # the first field of this seed's stream that holds a white cell not cut by the border
        rng = np.random.default_rng([seed, attempt])
        mask = compose(db, MaskSpec((320, 240), red_cells=60, white_cells=2), rng)
        truth = [c.bbox for c in mask.cells if c.cls != RED_CELL and c.bbox[0] > 0 and c.bbox[1] > 0
                 and c.bbox[0] + c.bbox[2] < 320 and c.bbox[1] + c.bbox[3] < 240]
        if truth:
            break
    image = render_mask(mask, hospital, rng, white_px=db.diameter())
    found = locate_cells(image)
    for box in truth:
        assert max(_iou(box, (c.x, c.y, c.w, c.h)) for c in found) >= 0.5
    assert len(found) <= sum(c.cls != RED_CELL for c in mask.cells)  # red cells and platelets are not found
    assert all(m // INSTANCE_STRIDE != 1 for m in [mask.instance[int(c.centre[1]), int(c.centre[0])] for c in found])


def test_a_field_without_white_cells_gives_none():
    db = simulator_database(per_class=2, classes=["neutrophil"])
    rng = np.random.default_rng(3)
    mask = compose(db, MaskSpec((320, 240), red_cells=50, white_cells=0), rng)
    assert locate_cells(render_mask(mask, "clinic", rng, white_px=db.diameter())) == []
    assert locate_cells(np.full((100, 100, 3), 230, np.uint8)) == []
