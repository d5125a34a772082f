"""`stainshift distill`: a pixel-wise student of a trained harmonizer, its colour table, and what it cannot do
(draw or erase structure)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from stainshift import runs
from stainshift.cli.main import main
from stainshift.data.io import list_images, read_image
from stainshift.distill import DistillRequest, distill
from stainshift.errors import StainshiftError
from stainshift.models.distilled import DistilledOptions, apply_lut, lut_grid
from stainshift.models.registry import load_epoch, model_class
from stainshift.project import Project
from stainshift.train import checkpoints
from stainshift.train.loop import TrainRequest, train

from .conftest import TINY_CYCLEGAN, simulated_project


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    project = simulated_project(tmp_path_factory.mktemp("distill"), per_class=4, split=(0.5, 0.25, 0.25))
    train(project, TrainRequest("hgtp", "clinic", run_id="teacher", progress=False, track=False,
                                overrides={**TINY_CYCLEGAN, "epochs": 2, "keep_epochs": (1, 2)}))
    return project


def _image(project: Project) -> np.ndarray:
    path = next(p for p in list_images(project.domain("hgtp").folder) if "masks" not in p.parts)
    return read_image(path)


def _batch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]


def _student(lut_size: int = 33, seed: int = 0):
    torch.manual_seed(seed)
    return model_class("distilled").new_translator(DistilledOptions(lut_size=lut_size)).eval()


def test_student_has_stainnet_s_1283_parameters_and_only_1x1_convolutions():
    student = _student()
    assert sum(p.numel() for p in student.parameters()) == 1283
    convs = [m for m in student.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1)] * 3 and [c.out_channels for c in convs] == [32, 32, 3]


@pytest.mark.parametrize("lut_size", [0, 33])
def test_student_cannot_draw_or_erase_structure(project, lut_size):
    """Every output pixel is a function of its input colour alone: shuffling the pixels shuffles the output the same
    way, and pixels of one colour stay one colour. The CycleGAN teacher fails both."""
    image = _image(project)
    x = _batch(image)
    h, w = x.shape[2:]
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(0))
    shuffled = x.flatten(2)[:, :, order].reshape(x.shape)
    teacher = load_epoch(runs.epoch_file(runs.find_run(project, "hgtp", "clinic", "cyclegan"), 2))[0]
    with torch.inference_mode():
        for net, pixelwise in ((_student(lut_size), True), (teacher, False)):
            out, out_shuffled = net(x), net(shuffled)
            same = torch.allclose(out.flatten(2)[:, :, order].reshape(x.shape), out_shuffled, atol=1e-5)
            assert same is pixelwise
    # equal input colours give equal output colours (the background repeats a handful of colours)
    student = _student(lut_size)
    with torch.inference_mode():
        out = student(x)[0].flatten(1).T.numpy()
    colours, inverse = np.unique(x[0].flatten(1).T.numpy(), axis=0, return_inverse=True)
    assert len(colours) < h * w
    for k in np.flatnonzero(np.bincount(inverse.ravel()) > 1)[:50]:
        group = out[inverse.ravel() == k]
        assert np.ptp(group, axis=0).max() < 1e-6


def test_lookup_table_matches_the_network_it_was_baked_from(project):
    x = _batch(_image(project))
    network = _student(0)
    with torch.inference_mode():
        exact = network(x)
        for size, bound in ((17, 4.0), (33, 2.0), (65, 1.0)):  # 8-bit levels; finer tables are closer
            table = _student(size)
            err = (table(x) - exact).abs().max().item() * 255
            assert err < bound, (size, err)
        # for 8-bit images the table expands to all 2^24 colours: one gather per pixel, the same colours
        table = _student(33)
        image = _image(project)
        by_gather = table.translate_8bit(image).astype(float)
        by_lookup = (table(_batch(image))[0].permute(1, 2, 0).numpy() * 255).round()
        assert by_gather.shape == image.shape and np.abs(by_gather - by_lookup).max() <= 1
        with pytest.raises(StainshiftError, match="uint8"):
            table.translate_8bit(image.astype(np.float32))
        # the table reproduces the network exactly at its own grid colours
        colours = lut_grid(9)
        baked = network.run_network(colours).reshape(1, 3, 9, 9, 9)
        assert torch.allclose(apply_lut(baked, colours), network.run_network(colours), atol=1e-5)


def test_table_is_rebuilt_when_the_weights_change(project):
    x = _batch(_image(project))
    student = _student(33)
    with torch.inference_mode():
        before = student(x)
    other = _student(33, seed=1)
    student.load_state_dict(other.state_dict())
    with torch.inference_mode():
        assert torch.allclose(student(x), other(x)) and not torch.allclose(student(x), before)


def test_distill_end_to_end_from_the_cli(project, tmp_path, capsys):
    assert main(["distill", "--src", "hgtp", "--dst", "clinic", "--epoch", "last", "--preset", "tiny",
                 "--epochs", "3", "--no-track", "--project", str(project.file)]) == 0
    said = capsys.readouterr().out
    assert "cyclegan epoch 2" in said and "--method distilled" in said
    run = runs.find_run(project, "hgtp", "clinic", "distilled")
    teacher_file = runs.epoch_file(runs.find_run(project, "hgtp", "clinic", "cyclegan"), 2)
    assert run.name == f"cyclegan-e2-tiny-s0-{checkpoints.file_hash(teacher_file)[:8]}" and runs.kept_epochs(run) == [3]
    record = json.loads((run / "distill.json").read_text())
    assert record["teacher"]["sha256"] == checkpoints.file_hash(teacher_file) and record["teacher"]["epoch"] == 2
    checks = record["checks"]
    assert checks["n_images"] == 2 and checks["lut_vs_network_max"] < 2.0
    assert 0 < checks["student_vs_teacher_mae"] < 60 and 0 < checks["ssim_to_teacher"] <= 1
    assert json.loads(runs.selected_file(run).read_text())["epoch"] == 3

    # the student learned something of the teacher: closer to it than the input is
    teacher = load_epoch(teacher_file)[0]
    student = load_epoch(runs.epoch_file(run, 3))[0]
    x = _batch(_image(project))
    with torch.inference_mode():
        target = teacher(x)
        assert (student(x) - target).abs().mean() < (x - target).abs().mean()

    # harmonize serves it like any learned method; its output is the student's mapping of each input
    out = tmp_path / "out"
    assert main(["harmonize", "--src", "hgtp", "--dst", "clinic", "--method", "distilled", "--out", str(out),
                 "--quiet", "--project", str(project.file)]) == 0
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 8 and {r["method"] for r in rows} == {"distilled"} and {r["epoch"] for r in rows} == {"3"}
    first = rows[0]
    with torch.inference_mode():
        expected = (student(_batch(read_image(first["input"])))[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(read_image(first["output"]).astype(float) - expected).max() <= 1

    # a second distill of the same teacher is refused, --resume continues it
    with pytest.raises(StainshiftError, match="pass --resume"):
        distill(project, DistillRequest("hgtp", "clinic", epoch="last", preset="tiny", progress=False, track=False))


def test_distill_errors(project, capsys):
    with pytest.raises(StainshiftError, match="classical methods are already pixel-wise"):
        distill(project, DistillRequest("hgtp", "clinic", teacher="reinhard", progress=False, track=False))
    with pytest.raises(StainshiftError, match=r"no epoch selected.*stainshift select"):
        distill(project, DistillRequest("hgtp", "clinic", epoch="best", progress=False, track=False))
    with pytest.raises(StainshiftError, match="no trained colorization run"):
        distill(project, DistillRequest("hgtp", "clinic", teacher="colorization", progress=False, track=False))
    assert main(["train", "distilled", "--src", "hgtp", "--dst", "clinic", "--preset", "tiny", "--no-track",
                 "--project", str(project.file)]) == 2
    assert "stainshift distill" in capsys.readouterr().err


def test_a_moved_project_still_resumes_its_student(tmp_path):
    """The teacher's file is recorded relative to the project folder, so copying the project elsewhere (and
    removing the original) leaves the student's run resumable there."""
    import shutil

    from stainshift.project import load_project

    first = simulated_project(tmp_path / "here", per_class=2, split=(0.5, 0.25, 0.25))
    train(first, TrainRequest("hgtp", "clinic", run_id="teacher", progress=False, track=False,
                              overrides={**TINY_CYCLEGAN, "epochs": 1, "keep_epochs": (1,)}))
    run = distill(first, DistillRequest("hgtp", "clinic", epoch="last", preset="tiny", progress=False,
                                        track=False)).run_dir
    assert runs.read_config(run)["options"]["teacher"] == "runs/hgtp_to_clinic/cyclegan/teacher/epochs/epoch_001.pt"
    shutil.copytree(tmp_path / "here", tmp_path / "there")
    shutil.rmtree(tmp_path / "here")

    moved = load_project(tmp_path / "there" / "stainshift.toml")
    resumed = distill(moved, DistillRequest("hgtp", "clinic", epoch="last", preset="tiny", progress=False,
                                            track=False, resume=True, overrides={"epochs": 3, "keep_epochs": (3,)}))
    assert resumed.run_dir == tmp_path / "there" / run.relative_to(tmp_path / "here")
    assert resumed.epoch == 3 and runs.kept_epochs(resumed.run_dir) == [2, 3]


def _conditioned(lut_size: int = 33, seed: int = 0):
    torch.manual_seed(seed)
    return model_class("distilled").new_translator(DistilledOptions(lut_size=lut_size,
                                                                    condition="image-stats")).eval()


@pytest.mark.parametrize("lut_size", [0, 33])
def test_conditioned_student_recolours_each_image_by_its_own_colours_and_draws_no_structure(project, lut_size):
    """The image-stats student maps a colour by its image's statistics: one map within an image (shuffling the
    pixels shuffles the output), another for an image with other colours; the plain student has one map for all."""
    x = _batch(_image(project))
    h, w = x.shape[2:]
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(0))
    shuffled = x.flatten(2)[:, :, order].reshape(x.shape)
    darker = x.clone()
    darker[..., : h // 2, :] *= 0.5  # the top half darkened: other statistics, the bottom half's colours unchanged
    student, plain = _conditioned(lut_size), _student(lut_size)
    assert sum(p.numel() for p in student.parameters()) == 1475
    with torch.inference_mode():
        out = student(x)
        assert torch.allclose(out.flatten(2)[:, :, order].reshape(x.shape), student(shuffled), atol=1e-5)
        # each image by its own statistics, whatever it is batched with
        both = student(torch.cat([x, darker]))
        assert torch.allclose(both[:1], out, atol=1e-5) and torch.allclose(both[1:], student(darker), atol=1e-5)
        bottom = slice(h // 2 + 1, None)
        assert (both[1:, :, bottom] - out[..., bottom, :]).abs().max() * 255 > 1  # same colours, other map
        assert torch.allclose(plain(darker)[..., bottom, :], plain(x)[..., bottom, :], atol=1e-5)
        if lut_size:
            assert (out - student.run_network(x)).abs().max() * 255 < 2.0  # its per-image table
    if lut_size:
        with pytest.raises(StainshiftError, match="one colour table per image"):
            student.translate_8bit(_image(project))


def test_a_conditioned_student_translates_a_large_image_whole_not_in_tiles(project):
    """Tiles have their own statistics: harmonize runs an image-stats student on the whole image (bounded memory:
    the network reads the pixels in chunks)."""
    from stainshift.harmonize import translate_images, translate_tiled

    x = _batch(_image(project))
    x = torch.cat([x, x.flip(-1) * 0.6], -1)  # halves of different colours
    student = _conditioned(0)
    student.CHUNK = 97  # several chunks, one not full
    with torch.inference_mode():
        whole = student(x)
        assert torch.allclose(translate_images(student, x, tile=16, overlap=4), whole, atol=1e-5)
        assert (translate_tiled(student, x[0], 16, 4)[None] - whole).abs().max() * 255 > 1  # what tiling would do


def test_distill_a_conditioned_student_from_the_cli(project, tmp_path, capsys):
    assert main(["distill", "--src", "hgtp", "--dst", "clinic", "--epoch", "last", "--preset", "tiny",
                 "--set", "condition=image-stats", "--no-track", "--quiet", "--project", str(project.file)]) == 0
    teacher_file = runs.epoch_file(runs.find_run(project, "hgtp", "clinic", "cyclegan"), 2)
    run = runs.method_dir(project, "hgtp", "clinic", "distilled") / \
        f"cyclegan-e2-tiny-s0-{checkpoints.file_hash(teacher_file)[:8]}-image-stats"
    assert runs.kept_epochs(run) == [2]  # its own run, next to the plain student's
    assert json.loads((run / "distill.json").read_text())["checks"]["lut_vs_network_max"] < 2.0
    student = load_epoch(runs.epoch_file(run, 2))[0]
    assert student.options.condition == "image-stats"
    x = _batch(_image(project))
    with torch.inference_mode():
        target = load_epoch(teacher_file)[0](x)
        assert (student(x) - target).abs().mean() < (x - target).abs().mean()
    assert main(["export", "--src", "hgtp", "--dst", "clinic", "--method", "distilled", "--run-id", run.name,
                 "--epoch", "last", "--out", str(tmp_path / "s.onnx"), "--project", str(project.file)]) == 2
    assert "conditioned student" in capsys.readouterr().err and not (tmp_path / "s.onnx").exists()
    with pytest.raises(StainshiftError, match="condition 'pixel' is not one of none, image-stats"):
        distill(project, DistillRequest("hgtp", "clinic", epoch="last", preset="tiny", progress=False, track=False,
                                        overrides={"condition": "pixel"}))
