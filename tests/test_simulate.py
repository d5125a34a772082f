"""Stain-shift simulator: files, determinism, pairing, masks, colour cues and argument checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stainshift.data.io import CYTOPLASM, NUCLEUS, cell_regions, read_image, read_mask
from stainshift.data.simulate import (
    CLASSES,
    DEFAULT_HOSPITALS,
    get_hospital,
    hospital_names,
    make_cell,
    render,
    render_cells,
    simulate,
)
from stainshift.errors import StainshiftError

SMALL = {"per_class": 2, "size": 48, "seed": 3}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("sim") / "a"
    return out, simulate(out, hospitals=2, **SMALL)


def test_simulate_writes_the_tree_and_table(written: tuple[Path, pd.DataFrame]) -> None:
    out, table = written
    assert list(table.columns) == ["id", "class", "hospital", "image", "mask"]
    assert len(table) == len(CLASSES) * SMALL["per_class"] * 2
    assert set(table["hospital"]) == {"clinic", "hgtp"}
    for row in table.itertuples():
        assert row.image == f"{row.hospital}/{row._2}/{row.id}.png"
        assert row.mask == f"{row.hospital}/masks/{row._2}/{row.id}.png"
        assert read_image(out / row.image).shape == (48, 48, 3)
    pd.testing.assert_frame_equal(pd.read_csv(out / "pairs.csv"), table)
    assert not list(out.rglob(".*"))  # no leftover temporary files


def test_same_arguments_give_identical_bytes(written: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    out, _ = written
    simulate(tmp_path / "b", hospitals=2, **SMALL)
    assert _files(out) == _files(tmp_path / "b")
    simulate(tmp_path / "c", hospitals=2, per_class=2, size=48, seed=4)
    assert _files(out) != _files(tmp_path / "c")


def test_pairs_share_mask_but_not_pixels(written: tuple[Path, pd.DataFrame]) -> None:
    out, table = written
    for _, group in table.groupby("id"):
        clinic, hgtp = (group[group["hospital"] == h].iloc[0] for h in ("clinic", "hgtp"))
        assert (out / clinic["mask"]).read_bytes() == (out / hgtp["mask"]).read_bytes()
        a, b = read_image(out / clinic["image"]), read_image(out / hgtp["image"])
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 10


def test_masks_are_value_coded_with_the_nucleus_inside_the_cell(written: tuple[Path, pd.DataFrame]) -> None:
    out, table = written
    for path in table["mask"]:
        mask = read_mask(out / path)
        assert set(np.unique(mask)) == {0, 128, 255}
        regions = cell_regions(mask)
        nucleus, cell = regions == NUCLEUS, regions != 0
        assert (regions == CYTOPLASM).any() and nucleus.any()
        assert nucleus.sum() < cell.sum()
        ys, xs = np.nonzero(cell)
        assert ys.min() > 0 and xs.min() > 0 and ys.max() < 47 and xs.max() < 47  # white cell not cut
        # the nucleus touches the background nowhere: dilate the background by one pixel
        background = ~cell
        grown = background.copy()
        grown[1:] |= background[:-1]
        grown[:-1] |= background[1:]
        grown[:, 1:] |= background[:, :-1]
        grown[:, :-1] |= background[:, 1:]
        assert (nucleus & grown).sum() <= 0.05 * nucleus.sum()


def test_hospitals_differ_in_colour_like_the_real_sites() -> None:
    batch = render_cells(2, hospitals=2, size=64, seed=0)
    clinic, hgtp = (batch.images[h].reshape(-1, 3).mean(0) for h in ("clinic", "hgtp"))
    assert clinic[2] - hgtp[2] > 25  # hgtp: yellow background (little blue)
    assert hgtp[1] - clinic[1] > 10  # clinic: pink (less green)
    background = batch.masks == 0
    bg_clinic = batch.images["clinic"][background].mean(0)
    assert bg_clinic[0] > bg_clinic[1] > bg_clinic[2]  # cream-pink background


def test_classes_carry_colour_cues() -> None:
    batch = render_cells(6, hospitals=["clinic"], size=64, seed=1)
    images = batch.images["clinic"].astype(float)

    def cytoplasm_red_minus_blue(cls: str) -> float:
        sel = np.asarray(batch.classes) == cls
        cyto = batch.masks[sel] == 128
        px = images[sel][cyto]
        return float((px[:, 0] - px[:, 2]).mean())

    def cell_darkness(cls: str) -> float:
        sel = np.asarray(batch.classes) == cls
        return float(255 - images[sel][batch.masks[sel] > 0].mean())

    assert cytoplasm_red_minus_blue("eosinophil") > cytoplasm_red_minus_blue("lymphocyte") + 30
    assert cytoplasm_red_minus_blue("eosinophil") > cytoplasm_red_minus_blue("monocyte") + 20
    assert cell_darkness("basophil") > cell_darkness("neutrophil") + 15
    cell_area = {c: (batch.masks[np.asarray(batch.classes) == c] > 0).sum() for c in ("lymphocyte", "monocyte")}
    assert cell_area["monocyte"] > 2 * cell_area["lymphocyte"]


def test_morphology_does_not_depend_on_hospitals_or_cell_count() -> None:
    one = render_cells(3, hospitals=["clinic"], size=48, seed=5, classes=("neutrophil", "blast"))
    three = render_cells(3, hospitals=3, size=48, seed=5, classes=("neutrophil", "blast"))
    assert np.array_equal(one.masks, three.masks)
    assert np.array_equal(one.images["clinic"], three.images["clinic"])
    later = render_cells(2, hospitals=["hgtp", "clinic"], size=48, seed=5, classes=("blast",), start=1)
    assert later.ids == ["blast_00001", "blast_00002"]
    assert np.array_equal(later.images["clinic"], three.images["clinic"][4:6])
    assert np.array_equal(later.images["hgtp"], three.images["hgtp"][4:6])
    cell = make_cell("blast", 2, 48, 5)
    assert np.array_equal(render(cell, "hgtp", 5), three.images["hgtp"][5])


def test_hospital_presets_and_generated_sites() -> None:
    assert list(DEFAULT_HOSPITALS)[:2] == ["clinic", "hgtp"]
    assert hospital_names(5) == ["clinic", "hgtp", "site3", "site4", "site5"]
    assert get_hospital("site9") == get_hospital("site9")
    assert get_hospital("site9") != get_hospital("site10")
    cell = make_cell("monocyte", 0, 48)
    images = [render(cell, name) for name in hospital_names(6)]
    means = np.array([im.reshape(-1, 3).mean(0) for im in images])
    assert np.all(np.linalg.norm(means[:, None] - means[None], axis=2)[np.triu_indices(6, 1)] > 1.0)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"per_class": 0}, "per_class"),
        ({"hospitals": ["clinic", "nowhere"]}, "unknown hospital"),
        ({"hospitals": 0}, "hospitals"),
        ({"hospitals": ["site2"]}, "unknown hospital"),
        ({"hospitals": ["clinic", "clinic"]}, "once"),
        ({"size": 16}, "size"),
        ({"classes": ["neutrophil", "platelet"]}, "classes"),
        ({"classes": []}, "classes"),
    ],
)
def test_bad_arguments_raise_a_one_line_error(tmp_path: Path, kwargs: dict, needle: str) -> None:
    args = {"per_class": 1, "size": 48, **kwargs}
    with pytest.raises(StainshiftError, match=needle) as info:
        simulate(tmp_path / "x", **args)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()
