"""Synthetic masks: shape databases from real mask files, layouts, the id convention, COCO round trips, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from stainshift.cli.main import main
from stainshift.data.io import write_mask
from stainshift.errors import DataError, StainshiftError
from stainshift.synth.coco import Segmentation, coco_dataset, decode_annotations
from stainshift.synth.dataset import read_instance_mask, read_mask_set, write_instance_mask, write_mask_set
from stainshift.synth.masks import (
    INSTANCE_STRIDE,
    SEMANTIC,
    MaskSpec,
    Overlap,
    categories_for,
    compose,
    touching_pairs,
)
from stainshift.synth.placement import GraphPlacer, Layout, MarkovPlacer, clark_evans
from stainshift.synth.shapes import BODY, NUCLEUS, RED_CELL, ShapeDatabase, build_database, simulator_database


@pytest.fixture(scope="module")
def sim_db() -> ShapeDatabase:
    return simulator_database(per_class=4, classes=["neutrophil", "lymphocyte", "monocyte"])


def _cell_mask(path: Path, cells: list[tuple[int, int, int, int]], size: tuple[int, int] = (80, 80)) -> Path:
    """A value-coded mask file: discs of cytoplasm (128) with a nucleus (255), given as (x, y, r, r_nucleus)."""
    mask = np.zeros(size[::-1], np.uint8)
    for x, y, r, rn in cells:
        cv2.circle(mask, (x, y), r, 128, -1)
        cv2.circle(mask, (x, y), rn, 255, -1)
    return write_mask(path, mask)


# -- shape database ------------------------------------------------------------------------------------------------
def test_database_from_mask_files_keeps_whole_cells_with_their_nucleus(tmp_path):
    a = _cell_mask(tmp_path / "neutrophil" / "a.png", [(40, 40, 20, 9)])
    b = _cell_mask(tmp_path / "lymphocyte" / "b.png", [(25, 25, 12, 8), (60, 60, 14, 10), (78, 40, 10, 5)])
    db = build_database("site", [(a, "neutrophil"), (b, "lymphocyte")])
    assert db.counts()["neutrophil"] == 1 and db.counts()["lymphocyte"] == 2  # the cell cut by the border is out
    assert db.skipped["lymphocyte"] == 1
    shape = db.shapes["neutrophil"][0]
    assert 39 <= shape.shape[0] <= 41 and 39 <= shape.shape[1] <= 41  # a disc of radius 20 (specks opened away)
    assert set(np.unique(shape)) == {0, BODY, NUCLEUS}
    assert abs(np.count_nonzero(shape == NUCLEUS) - np.pi * 9.5**2) < 40
    ratio = db.diameter(RED_CELL) / db.diameter()
    assert RED_CELL in db.counts() and abs(ratio - db.field_stats.red_to_white_diameter) < 0.1


def test_database_save_load_round_trip_and_augmented_samples(tmp_path, sim_db):
    path = sim_db.save(tmp_path / "db.npz")
    back = ShapeDatabase.load(path)
    assert back.counts() == sim_db.counts() and back.field_stats == sim_db.field_stats
    assert all(np.array_equal(x, y) for x, y in zip(back.shapes["monocyte"], sim_db.shapes["monocyte"], strict=True))
    rng = np.random.default_rng(0)
    areas = [np.count_nonzero(back.sample("lymphocyte", rng, scale=2.0)) for _ in range(20)]
    base = np.median([np.count_nonzero(s) for s in back.shapes["lymphocyte"]])
    assert 3.0 < np.median(areas) / base < 5.0  # scale 2 -> area x4, give or take the random factor
    with pytest.raises(StainshiftError, match="has no shapes"):
        back.sample("basophil", rng)


def test_domain_database_is_cached_and_rebuilt_when_a_mask_changes(tmp_path):
    from stainshift.data.domains import add_domain
    from stainshift.data.io import write_image
    from stainshift.project import load_or_new_project
    from stainshift.runs import shapes_file
    from stainshift.synth.shapes import domain_database

    for k in range(3):
        write_image(tmp_path / "site" / "neutrophil" / f"{k}.png", np.full((80, 80, 3), 200, np.uint8))
        _cell_mask(tmp_path / "site" / "masks" / "neutrophil" / f"{k}.png", [(40, 40, 18 + k, 8)])
    project, _ = add_domain(load_or_new_project(tmp_path), "site", tmp_path / "site")
    db = domain_database(project, "site")
    assert db.counts()["neutrophil"] == 3
    cached = shapes_file(project, "site")
    stamp = cached.stat().st_mtime_ns
    assert domain_database(project, "site").counts() == db.counts() and cached.stat().st_mtime_ns == stamp
    _cell_mask(tmp_path / "site" / "masks" / "neutrophil" / "0.png", [(20, 20, 10, 4), (55, 55, 15, 6)])
    os.utime(tmp_path / "site" / "masks" / "neutrophil" / "0.png", ns=(stamp + 10**9, stamp + 10**9))
    assert domain_database(project, "site").counts()["neutrophil"] == 4


def test_a_domain_whose_masks_hold_no_cell_is_a_one_line_error(tmp_path):
    blank = write_mask(tmp_path / "neutrophil" / "x.png", np.zeros((40, 40), np.uint8))
    with pytest.raises(DataError, match="no white-cell shapes"):
        build_database("empty", [(blank, "neutrophil")])


# -- layouts -------------------------------------------------------------------------------------------------------
def test_markov_placement_clusters_cells_where_uniform_does_not(sim_db):
    def mean_ce(layout: Layout) -> float:
        values = []
        for seed in range(3):
            m = compose(sim_db, MaskSpec((640, 480), layout=layout, red_cells=60, white_cells=0),
                        np.random.default_rng(seed))
            values.append(clark_evans(m.centres(), 480, 640))
        return float(np.mean(values))

    markov, uniform = mean_ce(Layout.MARKOV), mean_ce(Layout.UNIFORM)
    assert markov < uniform - 0.15, (markov, uniform)


def test_graph_layout_places_cells_at_dgm_graph_nodes(sim_db):
    import networkx as nx

    placer = GraphPlacer(480, 640, 15, 30.0, np.random.default_rng(0))
    assert len(placer.points) == 15  # generation 3 has exactly 15 nodes
    assert len(placer.edges) == nx.dorogovtsev_goltsev_mendes_graph(3).number_of_edges()
    sizes = placer.points[:, 2]
    assert sizes.min() >= 0.85 - 1e-9 and sizes.max() <= 1.15 + 1e-9 and sizes.std() > 0
    rng = np.random.default_rng(0)
    assert placer.propose(rng) == tuple(placer.points[0])  # the first node, as laid out
    placer.rejected(*placer.points[0][:2])
    y, x, _ = placer.propose(rng)  # did not fit: a spot near the same node
    assert 0 < np.hypot(y - placer.points[0][0], x - placer.points[0][1]) <= 30.0 * 0.25 + 1e-9
    placer.placed(y, x, 10.0)
    assert placer.propose(rng) == tuple(placer.points[1])
    m = compose(sim_db, MaskSpec((640, 480), layout=Layout.GRAPH, red_cells=14, white_cells=1),
                np.random.default_rng(1))
    assert 1 <= len(m.cells) <= 15 and len(m.cells) + m.dropped == 15


# -- the mask convention ---------------------------------------------------------------------------------------
def test_instance_semantic_and_colour_maps_agree(sim_db):
    m = compose(sim_db, MaskSpec((320, 240), red_cells=40, white_cells=3), np.random.default_rng(3))
    ids = np.unique(m.instance)[1:]
    assert (ids % INSTANCE_STRIDE > 0).all() and set(ids // INSTANCE_STRIDE) <= set(categories_for(sim_db))
    red = m.instance // INSTANCE_STRIDE == 1
    assert (m.semantic[red] == SEMANTIC["red_cell"]).all()
    white = m.instance // INSTANCE_STRIDE >= 2
    assert set(np.unique(m.semantic[white])) == {SEMANTIC["cytoplasm"], SEMANTIC["nucleus"]}
    assert (m.semantic[m.instance == 0] == 0).all()
    assert m.count("red_cell") + m.dropped >= 40 - 3 and sum(m.count(c) for c in sim_db.white_classes()) <= 3
    # touching cells of one class never share a colour
    pairs = touching_pairs(m.instance)
    same = pairs[pairs[:, 0] // INSTANCE_STRIDE == pairs[:, 1] // INSTANCE_STRIDE]
    assert len(same) > 0
    colour_of = {c.instance: tuple(m.colour[m.instance == c.instance][0]) for c in m.cells}
    assert all(colour_of[a] != colour_of[b] for a, b in same.tolist())


def test_forbidden_overlap_keeps_every_cell_whole_and_allowed_overlap_covers_some(sim_db):
    spec = MaskSpec((200, 150), red_cells=120, white_cells=0, n_init=5)
    forbid = compose(sim_db, spec, np.random.default_rng(0))
    allow = compose(sim_db, MaskSpec(**{**spec.__dict__, "overlap": Overlap.ALLOW}), np.random.default_rng(0))
    assert forbid.dropped > 0  # a crowded field: some cells found no free spot
    assert all(c.area == c.placed_area for c in forbid.cells)  # no cell lost a pixel to another
    assert allow.dropped < forbid.dropped
    assert sum(c.area < c.placed_area for c in allow.cells) >= 5  # later cells lie on top of earlier ones


def test_markov_map_is_the_running_mean_of_the_excitations():
    placer = MarkovPlacer(64, 96, cell_size=8.0, n_init=3)
    centres = [(10, 10), (40, 70), (30, 20), (50, 40), (12, 80)]
    singles = []
    for y, x in centres:
        one = MarkovPlacer(64, 96, cell_size=8.0, n_init=1)
        one.placed(y, x, 3.0)
        singles.append(one.excitation[:64, :96].astype(np.float64))  # z(l), alone, sums to 1
        placer.placed(y, x, 3.0)
    p = placer.scale * placer.excitation[:64, :96].astype(np.float64)
    # P(4) = mean of the first 3 z; P(5) = 4/5 P(4) + 1/5 z_4; P(6) = 5/6 P(5) + 1/6 z_5
    expected = np.mean(singles[:3], axis=0)
    expected = 4 / 5 * expected + 1 / 5 * singles[3]
    expected = 5 / 6 * expected + 1 / 6 * singles[4]
    assert abs(p.sum() - 1.0) < 1e-5
    assert np.allclose(p, expected, atol=1e-7)
    assert all(s[y, x] == 0 for s, (y, x) in zip(singles, centres, strict=True))  # the cell's own area is cut out


def test_red_cell_count_follows_the_field_statistics(sim_db):
    from stainshift.synth.masks import _counts

    spec = MaskSpec((320, 240))
    mean, sd = sim_db.field_stats.red_count_for(spec.size, sim_db.diameter())
    draws = [_counts(sim_db, spec, np.random.default_rng(k), sim_db.diameter())[0] for k in range(400)]
    assert abs(np.mean(draws) - mean) < 0.1 * mean and abs(np.std(draws) - sd) < 0.2 * sd


def test_too_few_colours_for_touching_cells_is_a_clear_error(sim_db):
    with pytest.raises(StainshiftError, match="--colours"):
        compose(sim_db, MaskSpec((200, 150), red_cells=80, white_cells=0, colours=1), np.random.default_rng(0))


def test_a_size_smaller_than_one_cell_is_refused(sim_db):
    with pytest.raises(StainshiftError, match="smaller than one cell"):
        compose(sim_db, MaskSpec((16, 16)), np.random.default_rng(0))


def test_single_cell_crops_have_one_white_cell_near_the_centre(sim_db):
    m = compose(sim_db, MaskSpec((96, 96), crop=True), np.random.default_rng(5))
    whites = [c for c in m.cells if c.cls != RED_CELL]
    assert len(whites) == 1
    x, y, w, h = whites[0].bbox
    assert abs(x + w / 2 - 48) < 12 and abs(y + h / 2 - 48) < 12


def test_class_proportions_are_followed(sim_db):
    spec = MaskSpec((640, 480), red_cells=0, white_cells=60, classes={"neutrophil": 3.0, "monocyte": 1.0})
    m = compose(sim_db, spec, np.random.default_rng(2))
    assert m.count("lymphocyte") == 0
    assert m.count("neutrophil") > 1.8 * m.count("monocyte") > 0


# -- files, COCO, determinism ----------------------------------------------------------------------------------------
def test_mask_set_is_deterministic_resumable_and_its_coco_decodes_to_the_masks(tmp_path, sim_db):
    from pycocotools.coco import COCO

    spec = MaskSpec((160, 120), red_cells=12, white_cells=1)
    small = write_mask_set(sim_db, spec, 2, tmp_path / "a", seed=4)
    first = (tmp_path / "a" / small["masks"][0]["instance"])
    stamp = first.stat().st_mtime_ns
    write_mask_set(sim_db, spec, 3, tmp_path / "a", seed=4)  # resumes: the first two are kept as they are
    assert first.stat().st_mtime_ns == stamp
    write_mask_set(sim_db, spec, 3, tmp_path / "b", seed=4)
    (tmp_path / "b" / "colour" / "mask_00001.png").unlink()  # as if interrupted while writing mask 1
    write_mask_set(sim_db, spec, 3, tmp_path / "b", seed=4)
    manifest, categories, masks = read_mask_set(tmp_path / "a")
    _, _, again = read_mask_set(tmp_path / "b")
    for entry, a, b in zip(manifest["masks"], masks, again, strict=True):
        assert np.array_equal(a, b) and a.dtype == np.uint16
        colour = entry["colour"]
        assert np.array_equal(cv2.imread(str(tmp_path / "a" / colour)), cv2.imread(str(tmp_path / "b" / colour)))
    with pytest.raises(StainshiftError, match="already holds 3 masks"):
        write_mask_set(sim_db, spec, 2, tmp_path / "a", seed=4)
    coco = COCO(str(tmp_path / "a" / "coco.json"))
    assert len(coco.getImgIds()) == 3 and {c["name"] for c in coco.loadCats(coco.getCatIds())} >= {"red_cell"}
    for img in coco.loadImgs(coco.getImgIds()):
        instance = read_instance_mask(tmp_path / "a" / manifest["masks"][img["id"] - 1]["instance"], categories)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert len(anns) == len(np.unique(instance)) - 1
        for ann in anns:
            assert np.array_equal(coco.annToMask(ann).astype(bool), instance == ann["instance_id"])
            assert ann["category_id"] == ann["instance_id"] // INSTANCE_STRIDE
            assert ann["area"] == np.count_nonzero(instance == ann["instance_id"])
    with pytest.raises(StainshiftError, match="other arguments"):
        write_mask_set(sim_db, spec, 3, tmp_path / "a", seed=5)


def test_polygon_annotations_load_in_pycocotools_and_cover_the_cells(tmp_path, sim_db):
    from pycocotools.coco import COCO

    m = compose(sim_db, MaskSpec((200, 150), red_cells=150, white_cells=0, overlap=Overlap.ALLOW),
                np.random.default_rng(1))
    ring = np.zeros((60, 60), np.uint16)  # a cell with a large hole: its outer outline would fill the hole
    cv2.circle(ring, (30, 30), 25, 1001, -1)
    cv2.circle(ring, (30, 30), 18, 0, -1)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(coco_dataset([("x.png", m.instance), ("ring.png", ring)], m.categories,
                                            Segmentation.POLYGON)))
    coco = COCO(str(path))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert all(isinstance(a["segmentation"], list) for a in anns)
    for ann in anns:  # covered cells, pieces included
        a, b = coco.annToMask(ann).astype(bool), m.instance == ann["instance_id"]
        assert (a & b).sum() / (a | b).sum() > 0.9
    (ring_ann,) = coco.loadAnns(coco.getAnnIds(imgIds=[2]))
    assert isinstance(ring_ann["segmentation"], dict)  # kept as RLE
    assert np.array_equal(coco.annToMask(ring_ann).astype(bool), ring > 0)
    assert np.array_equal(decode_annotations(coco.dataset, 2, ring.shape), ring)


def test_instance_masks_off_the_convention_are_refused(tmp_path):
    bad = np.zeros((20, 20), np.uint16)
    bad[2:5, 2:5] = 2000  # k = 0
    path = write_instance_mask(tmp_path / "bad.png", bad)
    with pytest.raises(DataError, match="class_id\\*1000\\+k"):
        read_instance_mask(path, {1: "red_cell", 2: "neutrophil"})
    bad[2:5, 2:5] = 9001  # unknown class 9
    write_instance_mask(path, bad)
    with pytest.raises(DataError, match=r"bad\.png"):
        read_instance_mask(path, {1: "red_cell", 2: "neutrophil"})


# -- the command line ----------------------------------------------------------------------------------------------
def test_cli_masks_shapes_and_coco(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["synth", "masks", "--simulator", "--n", "2", "--size", "160x120", "--cells", "10", "--white", "1",
                 "--render", "clinic", "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["masks"]) == 2 and (out / "images" / "mask_00000.png").exists()
    image = cv2.imread(str(out / "images" / "mask_00000.png"))
    assert image.shape == (120, 160, 3)
    assert main(["synth", "coco", str(out), "--encoding", "polygon", "--out", str(tmp_path / "p.json"),
                 "--quiet"]) == 0
    assert len(json.loads((tmp_path / "p.json").read_text())["images"]) == 2
    assert main(["synth", "shapes", "--simulator", "--sheet", str(tmp_path / "sheet.png")]) == 0
    printed = capsys.readouterr().out
    assert "red_cell" in printed and "neutrophil" in printed
    assert cv2.imread(str(tmp_path / "sheet.png")) is not None


def test_cli_shapes_from_a_plain_folder_of_field_masks(tmp_path, capsys):
    _cell_mask(tmp_path / "fields" / "f1.png", [(40, 40, 15, 6), (5, 5, 8, 3)])  # the second is cut by the border
    _cell_mask(tmp_path / "fields" / "f2.png", [(30, 50, 12, 5)])
    assert main(["synth", "shapes", "--masks", str(tmp_path / "fields"), "--sheet", str(tmp_path / "s.png")]) == 0
    printed = capsys.readouterr().out
    assert "white_cell" in printed and " 2 shapes" in printed and "1 left out" in printed


@pytest.mark.parametrize(("flags", "expected"), [
    (["--size", "12x12"], "smaller than one cell"),
    (["--size", "big"], "WIDTHxHEIGHT"),
    (["--size", "0x10"], "positive"),
    (["--crop", "--size", "30x30"], "smaller than one cell"),
    (["--classes", "foo=1"], "no shapes"),
    (["--classes", "neutrophil=abc"], "name=proportion"),
    (["--classes", "neutrophil=nan"], "finite"),
    (["--classes", "red_cell=1"], "--cells"),
    (["--n", "0"], "--n 0"),
    (["--colours", "0"], "--colours"),
    (["--cells", "-1"], "--cells -1"),
    (["--scale", "0"], "--scale"),
    (["--red-px", "0"], "--red-px"),
    (["--n-init", "0"], "--n-init"),
    (["--render", "nowhere"], "unknown hospital"),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, flags, expected):
    code = main(["synth", "masks", "--simulator", "--n", "1", "--size", "160x120", "--out", str(tmp_path / "x"),
                 *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err


def test_cli_bad_folders_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["synth", "coco", str(tmp_path / "empty")]) == 2
    assert "manifest.json" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    assert main(["synth", "coco", str(tmp_path / "broken")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["synth", "masks", "--simulator", "--n", "1", "--size", "160x120", "--out",
                 str(tmp_path / "broken")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    (tmp_path / "broken" / "manifest.json").write_text("[1, 2]")
    assert main(["synth", "coco", str(tmp_path / "broken")]) == 2
    assert "not a synthetic-mask manifest" in capsys.readouterr().err
    db = tmp_path / "db.npz"
    db.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not a shape database"):
        ShapeDatabase.load(db)


def test_cli_choices_match_the_enums():
    from stainshift.cli import synth as cli

    assert tuple(Layout) == cli.LAYOUTS and tuple(Overlap) == cli.OVERLAPS and tuple(Segmentation) == cli.ENCODINGS


# -- real masks (skipped without ../shared/data) -------------------------------------------------------------------
@pytest.mark.realdata
def test_real_jtsc_masks_give_one_shape_per_whole_cell(tmp_path):
    from stainshift.data.domains import add_domain
    from stainshift.project import load_or_new_project
    from stainshift.synth.shapes import domain_database

    from .conftest import require_data

    site = require_data("jtsc_tecom")
    project, samples = add_domain(load_or_new_project(tmp_path), "jtsc", site, masks=site / "masks",
                                  classes=["neutrophil", "lymphocyte", "monocyte", "eosinophil"])
    db = domain_database(project, "jtsc")
    for cls in ("neutrophil", "lymphocyte", "monocyte", "eosinophil"):
        n_masks = sum(s.label == cls and s.mask is not None for s in samples)
        # one cell per single-cell mask, unless it touches the border or has no nucleus
        assert n_masks * 0.8 <= db.counts()[cls] + db.skipped.get(cls, 0) <= n_masks * 1.2
        assert db.counts()[cls] >= 0.6 * n_masks
    assert all((s == NUCLEUS).any() for s in db.shapes["neutrophil"])
    assert db.diameter("lymphocyte") < db.diameter("monocyte")  # small lymphocytes, large monocytes


@pytest.mark.realdata
def test_real_bccd_smear_masks_quantise_to_one_white_cell_per_field():
    from stainshift.data.io import cell_regions, read_mask
    from stainshift.synth.shapes import shapes_from_mask

    from .conftest import require_data

    masks = sorted((require_data("bccd") / "masks" / "smears").glob("*.png"))[:40]
    counts = [len(shapes_from_mask(cell_regions(read_mask(m)), keep_border=True)[0]) for m in masks]
    assert np.mean([c == 1 for c in counts]) > 0.8  # BCCD fields hold one white cell each, nearly always
