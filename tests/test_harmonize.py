"""harmonize: every method through one entry point, output tree and manifest, errors, tiling without seams."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import torch

from stainshift.cli.main import build_parser, main
from stainshift.data.io import list_images, read_image, write_image
from stainshift.errors import StainshiftError
from stainshift.harmonize import HarmonizeRequest, harmonize, methods, translate_images, translate_tiled
from stainshift.models.registry import build_model
from stainshift.project import Project
from stainshift.train.loop import TrainRequest, train

from .conftest import TINY_CYCLEGAN, simulated_project

TINY = TINY_CYCLEGAN


def _digest(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    return simulated_project(tmp_path_factory.mktemp("harm"), per_class=3, split=(0.34, 0.33, 0.33))


def test_cli_method_list_is_the_registry_s_image_methods():
    parser = build_parser()
    harmonize_parser = parser._subparsers._group_actions[0].choices["harmonize"]
    method = next(a for a in harmonize_parser._actions if a.dest == "method")
    assert tuple(method.choices) == methods() == ("reinhard", "macenko", "histogram", "cyclegan", "colorization",
                                                         "cut", "distilled")


@pytest.mark.parametrize("method", ["reinhard", "macenko", "histogram"])
def test_classical_methods_mirror_the_tree(project, method, tmp_path):
    inputs = [p for p in list_images(project.domain("hgtp").folder) if "masks" not in p.parts]
    before = _digest(inputs)
    result = harmonize(project, HarmonizeRequest("hgtp", "clinic", method=method, out=tmp_path / "out",
                                                 progress=False))
    outputs = list_images(tmp_path / "out")
    assert result.n_images == len(inputs) == len(outputs) == 6
    assert sorted(p.relative_to(tmp_path / "out") for p in outputs) == sorted(
        p.relative_to(project.domain("hgtp").folder) for p in inputs)
    for out in outputs:
        source = project.domain("hgtp").folder / out.relative_to(tmp_path / "out")
        assert read_image(out).shape == read_image(source).shape and out.suffix == source.suffix
    rows = list(csv.DictReader(result.manifest.open()))
    assert len(rows) == 6 and {r["method"] for r in rows} == {method} and rows[0]["epoch"] == ""
    assert _digest(inputs) == before  # inputs untouched
    # the colour moved toward the target hospital
    clinic = [p for p in list_images(project.domain("clinic").folder) if "masks" not in p.parts]
    target = np.mean([read_image(p).mean((0, 1)) for p in clinic], 0)
    moved = np.mean([read_image(p).mean((0, 1)) for p in outputs], 0)
    raw = np.mean([read_image(p).mean((0, 1)) for p in inputs], 0)
    assert np.abs(moved - target).sum() < np.abs(raw - target).sum()


def test_learned_method_epochs_and_errors(project, tmp_path):
    with pytest.raises(StainshiftError, match=r"no trained cyclegan run.*stainshift train cyclegan"):
        harmonize(project, HarmonizeRequest("hgtp", "clinic", method="cyclegan", epoch=1, progress=False))
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="r1", progress=False, track=False,
                                overrides={**TINY, "epochs": 2, "keep_epochs": (1, 2)}))
    with pytest.raises(StainshiftError, match=r"stainshift select --src hgtp --dst clinic"):
        harmonize(project, HarmonizeRequest("hgtp", "clinic", method="cyclegan", epoch="best", progress=False))
    with pytest.raises(StainshiftError, match=r"epoch 7 was not kept.*1, 2"):
        harmonize(project, HarmonizeRequest("hgtp", "clinic", method="cyclegan", epoch=7, progress=False))
    result = harmonize(project, HarmonizeRequest("hgtp", "clinic", method="cyclegan", epoch="last",
                                                 out=tmp_path / "gan", progress=False))
    assert result.epoch == 2 and len(result.checkpoint) == 16
    rows = list(csv.DictReader(result.manifest.open()))
    assert {r["epoch"] for r in rows} == {"2"} and {r["checkpoint"] for r in rows} == {result.checkpoint}
    # the default output folder
    default = harmonize(project, HarmonizeRequest("hgtp", "clinic", method="cyclegan", epoch=1, progress=False))
    assert default.out_dir == project.runs / "hgtp_to_clinic" / "cyclegan" / "harmonized"


def test_refuses_output_inside_input_and_bad_images(project, tmp_path):
    folder = tmp_path / "in"
    write_image(folder / "a.png", np.full((20, 20, 3), 180, np.uint8))
    (folder / "b.png").write_bytes(b"garbage")
    with pytest.raises(StainshiftError, match=r"inside the input folder"):
        harmonize(project, HarmonizeRequest("hgtp", "clinic", method="reinhard", input=folder, out=folder / "o"))
    with pytest.raises(StainshiftError, match=r"b.png.*--skip-bad"):
        harmonize(project, HarmonizeRequest("hgtp", "clinic", method="reinhard", input=folder, out=tmp_path / "o",
                                            progress=False))
    result = harmonize(project, HarmonizeRequest("hgtp", "clinic", method="reinhard", input=folder,
                                                 out=tmp_path / "o", skip_bad=True, progress=False))
    assert result.n_images == 1 and "b.png" in result.skipped[0]


def _smooth_image(size: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([0.8 - 0.3 * yy, 0.6 + 0.2 * xx, 0.7 - 0.1 * (xx + yy)])


def test_tiled_matches_whole_image_and_has_no_seams():
    torch.manual_seed(0)
    translator = build_model("cyclegan", "cpu", ngf=8, n_blocks=2).translator().eval()
    image = _smooth_image(160)
    with torch.inference_mode():
        whole = translator(image[None])[0].clamp(0, 1)
    tiled = translate_tiled(translator, image, tile=96, overlap=48)
    assert tiled.shape == whole.shape
    difference = (tiled - whole).abs()
    assert difference.mean() < 0.005 and difference.max() < 0.1

    # seams: the column-to-column (and row-to-row) change of the tiled output follows the whole-image output's
    def jumps(x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.diff(dim=dim).abs().mean(dim=(0, 3 - dim))

    for dim in (1, 2):
        assert (jumps(tiled, dim) - jumps(whole, dim)).abs().max() < 0.01


def test_crop_context_normalizes_each_training_size_tile_on_its_own():
    torch.manual_seed(0)
    translator = build_model("cyclegan", "cpu", ngf=8, n_blocks=2).translator().eval()
    image = _smooth_image(160)
    image[:, 100:, 100:] = 0.2  # a dark corner: whole-image statistics differ from a tile's own
    small = image[:, :64, :64]
    with torch.inference_mode():
        own = translator(image[None, :, :48, :48])[0].clamp(0, 1)
        alone = translator(small[None])[0].clamp(0, 1)
    local = translate_images(translator, image[None], tile=512, overlap=64, crop=48)[0]
    whole = translate_images(translator, image[None], tile=512, overlap=64)[0]
    # the top-left 32 x 32 px belong to the first 48 px tile only (the next starts 32 px on): its own statistics
    assert torch.allclose(local[:, :32, :32], own[:, :32, :32], atol=1e-5)
    assert (whole[:, :32, :32] - own[:, :32, :32]).abs().mean() > 0.01
    # an image no larger than the crop is translated whole in either context
    assert torch.equal(translate_images(translator, small[None], 512, 64, crop=64)[0], alone)


def test_cli_harmonize(project, tmp_path, capsys):
    code = main(["harmonize", "--src", "hgtp", "--dst", "clinic", "--method", "histogram", "--out",
                 str(tmp_path / "h"), "--project", str(project.file), "--quiet"])
    assert code == 0 and len(list_images(tmp_path / "h")) == 6
    code = main(["harmonize", "--src", "nowhere", "--dst", "clinic", "--method", "reinhard",
                 "--project", str(project.file)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown domain 'nowhere'" in err and err.count("\n") == 1


def test_scale_harmonized_output_keeps_the_input_size(project, tmp_path):
    import dataclasses

    scaled = dataclasses.replace(project, cell_diameter=20.0)
    scaled = scaled.with_domain(dataclasses.replace(scaled.domain("hgtp"), cell_diameter=40.0))  # factor 0.5
    train(scaled, TrainRequest(src="hgtp", dst="clinic", run_id="scaled", progress=False, track=False,
                               overrides={**TINY, "epochs": 1, "keep_epochs": (1,)}))
    result = harmonize(scaled, HarmonizeRequest("hgtp", "clinic", method="cyclegan", epoch=1, run_id="scaled",
                                                out=tmp_path / "s", progress=False))
    for row in csv.DictReader(result.manifest.open()):
        assert read_image(row["output"]).shape == read_image(row["input"]).shape


def test_keep_detail_carries_the_colour_change_onto_the_full_size_input():
    import cv2

    from stainshift.data.datasets import rescale
    from stainshift.harmonize import back_to_size

    rng = np.random.default_rng(0)
    original = rng.integers(60, 190, (120, 120, 3), dtype=np.uint8)  # detail at the pixel scale
    small = rescale(original, 0.4)
    shift = np.array([25, -10, 5], np.int16)
    translated = np.clip(small.astype(np.int16) + shift, 0, 255).astype(np.uint8)  # a pure colour change
    kept = back_to_size(original, small, translated, keep_detail=True)
    enlarged = back_to_size(original, small, translated, keep_detail=False)
    assert kept.shape == enlarged.shape == original.shape
    assert np.abs(kept.astype(np.int16) - original - shift).max() <= 1  # the input's pixels, recoloured

    def sharp(img):
        return cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F).var()
    assert sharp(kept) > 0.9 * sharp(original) > 2 * sharp(enlarged)
    same = rescale(original, 1.0)
    assert back_to_size(original, same, same, keep_detail=True) is same  # no rescale: nothing to carry
