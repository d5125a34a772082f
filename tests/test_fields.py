"""Whole-field domains: each field's white cell is located (or read from its mask), cached, and framed for every step.

Fields are synthetic masks rendered by the simulator, so the true white cell of each is known."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from stainshift.data.datasets import domain_dataset
from stainshift.data.domains import add_domain, crop_box, read_sample
from stainshift.data.fields import FRAME_DIAMETERS, field_cells
from stainshift.data.inspect import inspect_domain
from stainshift.data.io import write_image
from stainshift.data.splits import samples_in
from stainshift.errors import ProjectError
from stainshift.project import Project, load_project
from stainshift.runs import fields_cache
from stainshift.synth.masks import MaskSpec, compose
from stainshift.synth.render import render_mask
from stainshift.synth.shapes import RED_CELL, simulator_database

CLASSES = ("lymphocyte", "eosinophil")


def _fields(root, per_class: int = 3, masks: bool = False, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Write rendered 320x240 fields, one white cell each away from the centre; return key -> true cell centre."""
    db = simulator_database(per_class=6, classes=list(CLASSES))
    truth = {}
    for cls in CLASSES:
        n, attempt = 0, 0
        while n < per_class:
            rng = np.random.default_rng([seed, len(truth), attempt])
            attempt += 1
            mask = compose(db, MaskSpec((320, 240), red_cells=40, white_cells=1, classes={cls: 1.0}), rng)
            white = [c for c in mask.cells if c.cls != RED_CELL]
            if len(white) != 1:
                continue
            x, y, w, h = white[0].bbox
            if x == 0 or y == 0 or x + w >= 320 or y + h >= 240:  # cut by the border: not a clean ground truth
                continue
            key = f"{cls}/field_{n:02d}.png"
            write_image(root / key, render_mask(mask, "hgtp", rng, white_px=db.diameter()))
            if masks:
                coded = np.zeros(mask.semantic.shape, np.uint8)
                coded[mask.semantic == 2] = 128
                coded[mask.semantic == 3] = 255
                instance = mask.instance == white[0].instance
                write_image(root / "masks" / key, np.where(instance, coded, 0).astype(np.uint8))
            truth[key] = (x + w / 2, y + h / 2, (w + h) / 2)
            n += 1
    return truth


@pytest.fixture(scope="module")
def field_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("fields")
    return root, _fields(root / "site")


def _project(tmp_path) -> Project:
    return Project(file=tmp_path / "stainshift.toml", split=(0.34, 0.33, 0.33), cell_diameter=32.0)


@pytest.mark.parametrize("with_masks", [False, True])
def test_every_step_sees_the_fields_cell_framed_at_its_centre(tmp_path, with_masks):
    folder = tmp_path / "site"
    truth = _fields(folder, masks=with_masks)
    project, _ = add_domain(_project(tmp_path), "site", folder, fields=True)
    assert load_project(project.file).domain("site").fields
    cells = field_cells(project, "site")
    assert {c.source for c in cells.values()} == {"mask" if with_masks else "locator"}
    diameter = float(np.median([d for _, _, d in truth.values()]))
    for sample in samples_in(project, "site"):
        cx, cy, d = truth[sample.key]
        x, y, w, h = sample.box
        assert w == h
        assert abs(w - FRAME_DIAMETERS * diameter) < 0.35 * FRAME_DIAMETERS * diameter  # the domain's cell scale
        assert abs(x + w / 2 - cx) < 0.25 * d and abs(y + h / 2 - cy) < 0.25 * d
        crop = read_sample(sample)
        assert crop.shape == (h, w, 3)
    # the datasets (classifiers, GANs, selection, evaluation) read the framed cell: its centre is the stained cell
    item, _ = domain_dataset(project, "site", None, size=32)[0]
    centre = item[:, 12:20, 12:20].mean()
    corners = (item[:, :4, :4].mean() + item[:, -4:, -4:].mean()) / 2
    assert centre < corners - 0.05


def test_located_cells_are_cached_until_a_field_changes(tmp_path, field_tree):
    root, _ = field_tree
    project, samples = add_domain(_project(tmp_path), "site", root / "site", fields=True)
    cache = fields_cache(project, "site")
    raw = json.loads(cache.read_text())
    key = samples[0].key
    raw["fields"][key]["cells"] = [[1, 2, 3, 4, 5, True]]  # an unchanged file: the cached cells are trusted
    cache.write_text(json.dumps(raw))
    assert field_cells(project, "site")[key].primary.x == 1
    stat = samples[0].path.stat()
    os.utime(samples[0].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert field_cells(project, "site")[key].primary.x != 1  # the file changed: located again
    cache.write_text("{not json")
    assert len(field_cells(project, "site")) == len(samples)  # a damaged cache is rebuilt


def test_inspect_reports_cells_per_field_and_hints_fields(tmp_path, field_tree):
    root, truth = field_tree
    project, _ = add_domain(_project(tmp_path), "site", root / "site", fields=True)
    report = inspect_domain(project, "site")
    assert sum(report.cells_per_field.values()) == len(truth)
    assert report.cells_per_field["1"] >= len(truth) - 1
    assert "cells/field" in report.to_text()
    assert report.hint is None

    project, _ = add_domain(project, "plain", root / "site")  # the same fields, not declared as fields
    report = inspect_domain(project, "plain")
    assert report.cells_per_field is None
    assert report.hint is not None and "fields = true" in report.hint and "[domains.plain]" in report.hint


def test_centred_crops_get_no_fields_hint(tmp_path):
    from stainshift.data.simulate import simulate

    simulate(tmp_path / "data", hospitals=["clinic"], per_class=6, size=96, seed=0, classes=CLASSES)
    project, _ = add_domain(_project(tmp_path), "clinic", tmp_path / "data" / "clinic")
    report = inspect_domain(project, "clinic")
    assert report.cell_offset is not None and report.cell_offset < 0.12
    assert report.hint is None


def test_a_window_past_the_edge_is_filled_with_background_not_mirrored():
    image = np.full((100, 100, 3), 230, np.uint8)
    image[:20, :20] = (90, 40, 150)  # a dark cell in the corner
    crop = crop_box(image, (-30, -30, 80, 80))
    assert crop.shape == (80, 80, 3)
    assert (crop[:30, :] == 230).all() and (crop[:, :30] == 230).all()  # no mirrored copy of the cell
    assert (crop[30:50, 30:50] == (90, 40, 150)).all()
    assert crop_box(image, None) is image


def test_fields_must_be_a_boolean_in_the_project_file(tmp_path):
    (tmp_path / "stainshift.toml").write_text('[domains.a]\npath = "x"\nfields = "yes"\n')
    with pytest.raises(ProjectError, match="fields must be true or false"):
        load_project(tmp_path)


def test_selection_frames_the_cell_in_the_translated_whole_field_as_evaluation_does(tmp_path, field_tree):
    """select translates whole fields (as harmonize does) and cuts the cell's window from the output; untranslated,
    that window matches what the datasets read for the sample (cut at full size, then rescaled)."""
    import torch

    from stainshift.data.datasets import load_cell, to_tensor
    from stainshift.data.scale import scale_factor
    from stainshift.select import _load_whole, frame_and_crop

    root, _ = field_tree
    project, _ = add_domain(_project(tmp_path), "site", root / "site", fields=True)
    samples = samples_in(project, "site")
    scale = scale_factor(project, "site")
    whole, boxes = _load_whole(samples, scale)
    assert whole[0].shape[1:] == (round(240 * scale), round(320 * scale))  # the whole field, at the common scale
    for image, box, sample in zip(whole, boxes, samples, strict=True):
        framed = frame_and_crop(image, box, 32)
        direct = to_tensor(load_cell(sample, scale, 32))
        assert framed.shape == direct.shape == (3, 32, 32)
        assert torch.mean(torch.abs(framed - direct)) < 0.03


def test_the_cell_context_translates_each_located_cells_window_on_its_own(tmp_path, field_tree):
    """Fields default to the cell context: each located cell's training-crop window is translated alone (as the
    GAN's training crops were) and pasted over the field translated in crop-size tiles."""
    import torch

    from stainshift.data.datasets import load_cell, to_tensor
    from stainshift.data.scale import scale_factor
    from stainshift.harmonize import Context, cell_centres, default_context, translate_images
    from stainshift.models.registry import build_model

    root, truth = field_tree
    project, _ = add_domain(_project(tmp_path), "site", root / "site", fields=True)
    assert default_context(project, "site") is Context.CELL
    samples = samples_in(project, "site")
    scale = scale_factor(project, "site")
    centres = cell_centres(project, "site", [s.key for s in samples], scale)
    for sample, found in zip(samples, centres, strict=True):  # the located cells, at the common scale
        x, y, diameter = truth[sample.key]
        assert min(abs(cx - x * scale) + abs(cy - y * scale) for cx, cy in found) < 0.25 * diameter * scale
    torch.manual_seed(0)
    translator = build_model("cyclegan", "cpu", ngf=8, n_blocks=2).translator().eval()
    field = to_tensor(load_cell(dataclasses.replace(samples[0], box=None), scale))[None]
    crop = 32
    cell = translate_images(translator, field, 512, 64, crop, [centres[0][:1]])[0]
    tiles = translate_images(translator, field, 512, 64, crop)[0]
    cx, cy = centres[0][0]
    _, h, w = field.shape[1:]
    x0, y0 = min(max(round(cx - crop / 2), 0), w - crop), min(max(round(cy - crop / 2), 0), h - crop)
    with torch.inference_mode():
        alone = translator(field[:, :, y0:y0 + crop, x0:x0 + crop])[0].clamp(0, 1)
    inner = (slice(None), slice(y0 + 4, y0 + crop - 4), slice(x0 + 4, x0 + crop - 4))
    assert torch.allclose(cell[inner], alone[:, 4:-4, 4:-4], atol=1e-5)  # inside the feather: the window alone
    assert (tiles[inner] - cell[inner]).abs().mean() > 1e-3  # which the tiled field alone does not give
    far = (slice(None), slice(0, 8), slice(0, 8)) if (x0 > 16 or y0 > 16) else (slice(None), slice(-8, None),
                                                                                slice(-8, None))
    assert torch.equal(cell[far], tiles[far])  # away from the cell, the crop-context field is kept


def test_the_labelled_cell_is_pasted_last_so_a_neighbour_never_covers_its_window(tmp_path, field_tree):
    import torch

    from stainshift.harmonize import cell_centres, translate_images
    from stainshift.models.registry import build_model

    root, _ = field_tree
    project, _ = add_domain(_project(tmp_path), "site", root / "site", fields=True)
    samples = samples_in(project, "site")
    located = field_cells(project, "site")
    for sample, centres in zip(samples, cell_centres(project, "site", [s.key for s in samples], 1.0), strict=True):
        assert centres[-1] == located[sample.key].cells[0].centre  # the labelled (largest) cell comes last
    torch.manual_seed(0)
    translator = build_model("cyclegan", "cpu", ngf=8, n_blocks=2).translator().eval()
    image = torch.rand(1, 3, 96, 128)
    labelled, neighbour = (60.0, 48.0), (72.0, 52.0)  # windows of 32 px overlapping by most of their area
    out = translate_images(translator, image, 512, 64, 32, [[neighbour, labelled]])[0]
    with torch.inference_mode():
        alone = translator(image[:, :, 32:64, 44:76])[0].clamp(0, 1)
    assert torch.allclose(out[:, 36:60, 48:72], alone[:, 4:-4, 4:-4], atol=1e-5)


def test_harmonize_translates_a_fields_domain_in_the_cell_context_end_to_end(tmp_path, field_tree):
    """`harmonize` on a fields domain, as a user runs it after `train cyclegan`: the default context is `cell`, the
    manifest says so, each located cell's window is the generator's output for that window alone, and the rest of
    the field is the crop context's; `--context image` gives another field."""
    import csv

    import torch

    from stainshift.cli.main import main
    from stainshift.data.io import read_image
    from stainshift.harmonize import Context, HarmonizeRequest, cell_centres, harmonize
    from stainshift.models.registry import load_epoch
    from stainshift.project import save_project
    from stainshift.runs import epoch_file
    from stainshift.train.loop import TrainRequest, train

    from .conftest import TINY_CYCLEGAN

    root, _ = field_tree
    _fields(tmp_path / "other", per_class=3, seed=1)
    project, _ = add_domain(_project(tmp_path), "site", root / "site", fields=True)
    project, _ = add_domain(project, "other", tmp_path / "other")
    for name in ("site", "other"):  # the common diameter: translated at full size, so windows are pixels
        project = project.with_domain(dataclasses.replace(project.domain(name), cell_diameter=32.0))
    save_project(project)
    result = train(project, TrainRequest(src="site", dst="other", run_id="r", progress=False, track=False,
                                      overrides={**TINY_CYCLEGAN, "epochs": 1, "keep_epochs": (1,)}))
    cell = harmonize(project, HarmonizeRequest("site", "other", epoch=1, out=tmp_path / "cell", progress=False))
    crop = harmonize(project, HarmonizeRequest("site", "other", epoch=1, out=tmp_path / "crop", progress=False,
                                               context=Context.CROP))
    assert cell.context is Context.CELL and crop.context is Context.CROP
    rows = list(csv.DictReader(cell.manifest.open()))
    assert len(rows) == cell.n_images == 6 and {r["context"] for r in rows} == {"cell"}
    translator, _ = load_epoch(epoch_file(result.run_dir, 1))
    translator.eval()
    for row in rows:
        source, out = read_image(row["input"]), read_image(row["output"])
        assert out.shape == source.shape
        key = os.path.relpath(row["input"], root / "site")
        (cx, cy), *_ = reversed(cell_centres(project, "site", [key], 1.0)[0])  # the labelled cell, pasted last
        h, w = source.shape[:2]
        x0, y0 = min(max(round(cx - 16), 0), w - 32), min(max(round(cy - 16), 0), h - 32)
        window = torch.from_numpy(source[y0:y0 + 32, x0:x0 + 32].copy()).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            alone = (translator(window)[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()
        inner = out[y0 + 4:y0 + 28, x0 + 4:x0 + 28].astype(int)
        assert np.abs(inner - alone[4:-4, 4:-4]).max() <= 1  # inside the feather: the window translated alone
        kept = read_image(tmp_path / "crop" / key)
        far = np.ones((h, w), bool)
        far[max(y0 - 40, 0):y0 + 72, max(x0 - 40, 0):x0 + 72] = False  # clear of every located cell's window
        assert np.array_equal(out[far], kept[far])  # elsewhere: the crop context's field
    code = main(["harmonize", "--src", "site", "--dst", "other", "--epoch", "1", "--context", "image", "--out",
                 str(tmp_path / "image"), "--project", str(project.file), "--quiet"])
    image_rows = list(csv.DictReader((tmp_path / "image" / "manifest.csv").open()))
    assert code == 0 and {r["context"] for r in image_rows} == {"image"}
    first = rows[0]["output"].replace(str(tmp_path / "cell"), str(tmp_path / "image"))
    assert not np.array_equal(read_image(first), read_image(rows[0]["output"]))
