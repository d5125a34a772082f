"""export: a trained epoch as ONNX with dynamic shapes, equal to torch under onnxruntime; one-line errors."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
import torch

from stainshift import runs
from stainshift.cli.main import main
from stainshift.export import INSTALL, missing_packages
from stainshift.models.registry import load_epoch, model_class, model_options
from stainshift.project import Project
from stainshift.train import checkpoints
from stainshift.train.loop import TrainRequest, train

from .conftest import TINY_CYCLEGAN, simulated_project

pytestmark = pytest.mark.skipif(bool(missing_packages()),
                                reason=f"needs {', '.join(missing_packages())}: {INSTALL}")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    project = simulated_project(tmp_path_factory.mktemp("export"), per_class=3, split=(0.34, 0.33, 0.33))
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="r1", progress=False, track=False,
                                overrides={**TINY_CYCLEGAN, "epochs": 1, "keep_epochs": (1,)}))
    return project


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(capsys, argv: list[str], *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("stainshift: error:"), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_cyclegan_epoch_exports_with_dynamic_shapes_and_matches_torch(project, capsys):
    ckpt = runs.epoch_file(runs.method_dir(project, "hgtp", "clinic", "cyclegan") / "r1", 1)
    before = _sha(ckpt)
    args = ["export", "--project", str(project.file), "--src", "hgtp", "--dst", "clinic", "--epoch", "last"]
    out = runs.export_file(ckpt.parent.parent, 1)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"-> {out}" in printed and "verified with onnxruntime on 4 hgtp images and 2 random inputs" in printed
    diff = float(printed.split("max |onnx - torch| = ")[1].split()[0])
    assert diff <= 1e-4
    assert _sha(ckpt) == before  # the checkpoint is read, never written

    import onnx

    model = onnx.load(out)
    meta = {p.key: p.value for p in model.metadata_props}
    assert (meta["model"], meta["epoch"], meta["src"], meta["dst"]) == ("cyclegan", "1", "hgtp", "clinic")
    assert meta["checkpoint"] == checkpoints.file_hash(ckpt) and meta["input_range"] == "[0, 1]"
    assert meta["layout"] == "NCHW" and meta["channels"] == "RGB" and meta["min_side"] == "4"
    assert "scale" in json.loads(meta["preprocessing"])["src"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))

    # sizes the training crop (32) never had, not multiples of the generator's 4, and another batch size
    translator, _ = load_epoch(ckpt)
    session = _session(out)
    for shape in [(3, 3, 50, 71), (1, 3, 33, 97), (1, 3, int(meta["min_side"]), 9)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = translator(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4, shape
        assert np.abs(expected - x.numpy()).max() > 0.01  # the generator does change the image


def test_distilled_lookup_table_exports_from_a_checkpoint(tmp_path, capsys):
    options = model_options("distilled", "tiny")
    torch.manual_seed(0)
    student = model_class("distilled").new_translator(options)
    ckpt = checkpoints.save({**student.checkpoint(), "epoch": 2, "run": "d1", "src": "hgtp", "dst": "clinic"},
                            tmp_path / "student.pt")
    # a tolerance below float32 rounding: the check fails and nothing is written, not even a temporary file
    _one_line_error(capsys, ["export", "--checkpoint", str(ckpt), "--tolerance", "1e-12"],
                    "onnxruntime differs from torch by", "nothing written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.pt"]
    # an epoch file alone (no project file): verified on random inputs, written next to it
    assert main(["export", "--checkpoint", str(ckpt)]) == 0
    assert "on 2 random inputs (no source domain in the project)" in capsys.readouterr().out
    out = tmp_path / "student.onnx"
    import onnx

    model = onnx.load(out)
    ops = {n.op_type for n in model.graph.node}
    assert "GridSample" in ops and "Conv" not in ops  # the colour table is a constant, not recomputed per call
    translator, _ = load_epoch(ckpt)
    assert translator.use_lut
    x = torch.rand(2, 3, 1, 129, generator=torch.Generator().manual_seed(2))  # any size: 1x1 per pixel
    with torch.no_grad():
        expected = translator(x).numpy()
    got = _session(out).run(None, {"image": x.numpy()})[0]
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4
    assert {p.key: p.value for p in model.metadata_props}["min_side"] == "1"


def test_bad_input_gives_one_line_errors(project, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere.pt"
    _one_line_error(capsys, ["export", "--checkpoint", str(missing)], str(missing), "not found")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    _one_line_error(capsys, ["export", "--checkpoint", str(junk)], str(junk), "unreadable")
    base = ["export", "--project", str(project.file), "--src", "hgtp", "--dst", "clinic"]
    _one_line_error(capsys, base, "no epoch selected", "--epoch last")
    _one_line_error(capsys, [*base, "--epoch", "7"], "epoch 7 was not kept")
    _one_line_error(capsys, [*base, "--epoch", "1", "--out", str(tmp_path / "model.pt")], "*.onnx")
    _one_line_error(capsys, [*base, "--epoch", "1", "--opset", "11"], "--opset 11")
    _one_line_error(capsys, ["export", "--project", str(project.file)], "--src and --dst", "--checkpoint")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    _one_line_error(capsys, [*base, "--epoch", "1"], "onnxruntime", INSTALL)
