"""Rare-class translation: the class-pair data, the morphology measures, `rare train|select|generate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stainshift import runs
from stainshift.cli.main import main
from stainshift.data.io import read_image, read_mask
from stainshift.data.simulate import simulate
from stainshift.errors import StainshiftError
from stainshift.models.kinds import Kind
from stainshift.models.registry import names
from stainshift.morphology import MOVED, mask_agreement, measure, measure_regions, outline_iou
from stainshift.project import DomainConfig, Project, save_project
from stainshift.rare import (
    FOUND_MIN,
    IOU_MIN,
    SIZE_CHANGE_MAX,
    ClassPair,
    RareEpochScores,
    _Reference,
    choose,
    generate,
)

TINY = ["--preset", "tiny", "--epochs", "2", "--keep-epochs", "1,2", "--no-track", "--quiet"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    """One simulated hospital, 64 px cells of three classes, a project naming it."""
    root = tmp_path_factory.mktemp("rare")
    simulate(root / "data", hospitals=["clinic"], per_class=8, size=64, seed=0,
             classes=("lymphocyte", "blast", "neutrophil"))
    project = Project(file=root / "stainshift.toml", split=(0.5, 0.5, 0.0))
    save_project(project.with_domain(DomainConfig("clinic", "data/clinic", root, masks="data/clinic/masks")))
    return root


@pytest.fixture(scope="module")
def trained(sim) -> Path:
    assert main(["rare", "train", "--project", str(sim), "--domain", "clinic", "--from", "lymphocyte", "--to",
                 "blast", "--run-id", "r0", *TINY]) == 0
    return sim / "runs" / "clinic.lymphocyte_to_clinic.blast" / "classcyclegan" / "r0"


def _images(root: Path, cls: str) -> list[Path]:
    return sorted((root / "data" / "clinic" / cls).glob("*.png"))


# -- morphology ---------------------------------------------------------------------------------------------------
def test_threshold_segmentation_agrees_with_the_simulators_masks(sim):
    dices = [mask_agreement(read_image(p), read_mask(p.parents[1] / "masks" / p.parent.name / p.name))
             for cls in ("lymphocyte", "blast") for p in _images(sim, cls)]
    cell, nucleus = np.nanmedian(np.array(dices), axis=0)
    assert cell > 0.8 and nucleus > 0.7


def test_blasts_measure_as_the_simulator_draws_them_against_lymphocytes(sim):
    """Ground truth: the simulator's blasts are larger, with a paler, finer nucleus than its lymphocytes."""
    def from_masks(cls):
        out = []
        for p in _images(sim, cls):
            mask = read_mask(p.parents[1] / "masks" / cls / p.name)
            out.append(measure_regions(read_image(p), mask > 64, mask > 192))
        return out

    lymph, blast = from_masks("lymphocyte"), from_masks("blast")
    assert np.median([b.diameter for b in blast]) > np.median([c.diameter for c in lymph])
    assert np.median([b.nucleus_L for b in blast]) > np.median([c.nucleus_L for c in lymph])
    thresholds = [measure(read_image(p)) for p in _images(sim, "blast")]
    assert sum(t is not None for t in thresholds) >= 6
    assert abs(np.median([t.diameter for t in thresholds if t]) - np.median([b.diameter for b in blast])) < 6


def test_outline_iou_is_one_for_the_same_cell_and_drops_when_it_moves(sim):
    image = read_image(_images(sim, "lymphocyte")[0])
    assert outline_iou(image, image) == pytest.approx(1.0)
    moved = np.roll(image, 12, axis=1)
    assert outline_iou(image, moved) < 0.8


def test_moved_is_zero_at_the_inputs_and_one_at_the_target_class():
    rng = np.random.default_rng(0)
    inputs = rng.normal(0, 1, (20, 10))
    target = inputs + 3.0
    ref = _Reference(inputs, target)
    moved, gap = ref.moved(target)
    assert all(v == pytest.approx(1.0) for v in moved.values()) and set(moved) == set(MOVED)
    assert gap == pytest.approx(0.0, abs=1e-9)
    moved0, gap0 = ref.moved(inputs)
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in moved0.values()) and gap0 == pytest.approx(1.0)


def test_the_rule_ranks_only_epochs_that_keep_the_cell():
    def row(epoch, iou, size, gap, p=None):
        return RareEpochScores(epoch, size, iou, 1.0, gap, {}, p, None)

    scores = [row(0, 1.0, 0.0, 1.0), row(1, 0.9, 0.05, 0.6, 0.2), row(2, 0.5, 0.05, 0.1, 0.9),
              row(3, 0.85, SIZE_CHANGE_MAX + 0.1, 0.05, 0.95), row(4, 0.8, 0.1, 0.4, 0.4)]
    epoch, rule, fallback, _ = choose(scores, with_classifier=False)
    assert (epoch, rule, fallback) == (4, "morphology", False)          # 2 and 3 moved the outline or the size
    epoch, rule, fallback, _ = choose(scores, with_classifier=True)
    assert (epoch, rule, fallback) == (4, "target-probability", False)
    bad = [row(0, 1.0, 0.0, 1.0), row(1, IOU_MIN - 0.2, 0.05, 0.2), row(2, IOU_MIN - 0.1, 0.05, 0.3)]
    epoch, _, fallback, reason = choose(bad, with_classifier=False)
    assert (epoch, fallback) == (2, True) and "no epoch kept" in reason
    # an epoch that lost most cells (the segmentation finds none in the outputs) does not keep the cell, however
    # well the few it kept look
    lost = RareEpochScores(5, 0.0, 1.0, FOUND_MIN - 0.3, 0.0, {}, 0.99, None)
    assert not lost.keeps_cell and choose([*scores, lost], with_classifier=True)[0] == 4
    # with a classifier, equal probabilities go to the epoch nearer the target class's measures
    tie = [row(0, 1.0, 0.0, 1.0), row(1, 0.9, 0.05, 0.6, 0.5), row(2, 0.9, 0.05, 0.3, 0.5)]
    assert choose(tie, with_classifier=True)[0] == 2


# -- train / select / generate --------------------------------------------------------------------------------------
def test_rare_train_learns_from_the_two_classes_only(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["classes"] == ["lymphocyte", "blast"] and config["pair"] == ["clinic.lymphocyte", "clinic.blast"]
    assert config["n_train"] == {"clinic.lymphocyte": 4, "clinic.blast": 4}
    assert runs.kept_epochs(trained) == [1, 2]
    assert all(k.startswith("lymphocyte/") for k in config["sample_images"])


def test_rare_select_scores_every_kept_epoch_and_best_resolves_to_it(sim, trained, capsys):
    assert main(["rare", "select", "--project", str(sim), "--domain", "clinic", "--from", "lymphocyte", "--to",
                 "blast", "--max-images", "3"]) == 0
    record = json.loads((trained / "selected.json").read_text())
    assert [s["epoch"] for s in record["scores"]] == [0, 1, 2]
    assert record["epoch"] in (1, 2) and record["rule"] == "morphology"
    assert record["scores"][0]["outline_iou"] == 1.0 and record["scores"][0]["target_gap"] == 1.0
    assert (trained / "selection.png").stat().st_size > 0 and (trained / "selection.csv").exists()
    from stainshift.project import load_project

    path, epoch, _ = runs.resolve_epoch(load_project(sim), *ClassPair("clinic", "lymphocyte", "blast").views,
                                        "classcyclegan", "best")
    assert epoch == record["epoch"] and path == runs.epoch_file(trained, epoch)
    assert "selected epoch" in capsys.readouterr().out


def test_rare_generate_writes_a_class_folder_with_a_manifest_and_resumes(sim, trained, tmp_path, capsys):
    from stainshift.project import load_project

    project, pair = load_project(sim), ClassPair("clinic", "lymphocyte", "blast")
    out = tmp_path / "gen"
    manifest = generate(project, pair, 6, out, epoch=2, seed=1)
    files = sorted((out / "blast").glob("*.png"))
    assert len(files) == 6 == len(manifest["images"]) and not (out / "lymphocyte").exists()
    assert all(f.name.startswith("gen_") for f in files)
    assert all(e["generated"] and e["source"].startswith("lymphocyte/") for e in manifest["images"])
    assert manifest["config"]["epoch"] == 2 and len(manifest["config"]["checkpoint_hash"]) == 16
    # 4 training lymphocytes, 6 images: the last two are flipped or turned repeats, not copies
    assert sorted(e["variant"] for e in manifest["images"]) == [0, 0, 0, 0, 1, 1]
    source = read_image(sim / "data" / "clinic" / manifest["images"][0]["source"])
    assert read_image(out / manifest["images"][0]["image"]).shape == source.shape
    stamps = {f: f.stat().st_mtime_ns for f in files}
    generate(project, pair, 6, out, epoch=2, seed=1)                       # same arguments: nothing rewritten
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    with pytest.raises(StainshiftError, match="other arguments"):
        generate(project, pair, 6, out, epoch=1, seed=1)
    with pytest.raises(StainshiftError, match="at most 32"):
        generate(project, pair, 33, tmp_path / "g2", epoch=2)
    with pytest.raises(StainshiftError, match="test split"):
        generate(project, pair, 2, tmp_path / "g3", epoch=2, split="test")
    # named as a domain, the folder is announced as generated
    assert main(["domains", "add", "gen", str(out), "--project", str(tmp_path)]) == 0
    assert "holds generated images" in capsys.readouterr().out


def test_rare_generate_cli_before_any_selection_points_at_rare_select(sim, tmp_path, capsys):
    assert main(["rare", "train", "--project", str(sim), "--domain", "clinic", "--from", "neutrophil", "--to",
                 "blast", "--run-id", "n0", *TINY]) == 0
    assert main(["rare", "generate", "--project", str(sim), "--domain", "clinic", "--from", "neutrophil", "--to",
                 "blast", "--n", "2", "--out", str(tmp_path / "g"), "--quiet"]) == 2
    assert "stainshift rare select --domain clinic --from neutrophil --to blast" in capsys.readouterr().err
    assert main(["rare", "generate", "--project", str(sim), "--domain", "clinic", "--from", "neutrophil", "--to",
                 "blast", "--n", "2", "--epoch", "last", "--out", str(tmp_path / "g"), "--quiet"]) == 0
    assert len(list((tmp_path / "g" / "blast").glob("gen_neutrophil_*.png"))) == 2


def test_rare_select_with_a_classifier_ranks_by_the_target_probability(sim, trained, capsys):
    assert main(["classify", "train", "--project", str(sim), "--domain", "clinic", "--epochs", "1", "--size", "32",
                 "--batch-size", "4", "--name", "selector", "--no-track", "--quiet"]) == 0
    assert main(["rare", "select", "--project", str(sim), "--domain", "clinic", "--from", "lymphocyte", "--to",
                 "blast", "--classifier", "selector", "--quiet"]) == 0
    record = json.loads((trained / "selected.json").read_text())
    assert record["rule"] == "target-probability" and record["classifier"] == "selector"
    assert all(0 <= s["p_target"] <= 1 and 0 <= s["to_rate"] <= 1 for s in record["scores"])
    assert record["mask_images"] == 4 and 0 <= record["mask_dice_cell"] <= 1  # the domain has masks


@pytest.mark.parametrize("args, message", [
    (["--from", "lymphocyte", "--to", "lymphocyte"], "both 'lymphocyte'"),
    (["--from", "lymphocyte", "--to", "monocyte"], "no class 'monocyte'"),
    (["--from", "lymphocyte", "--to", "basophil"], "has 1 image"),
])
def test_bad_class_pairs_are_one_line_errors(sim, args, message, capsys, tmp_path):
    (sim / "data" / "clinic" / "basophil").mkdir(exist_ok=True)
    lone = sim / "data" / "clinic" / "basophil" / "one.png"
    lone.write_bytes(_images(sim, "blast")[0].read_bytes())
    try:
        assert main(["rare", "train", "--project", str(sim), "--domain", "clinic", *args, *TINY]) == 2
    finally:
        lone.unlink()
        lone.parent.rmdir()
        (sim / "runs" / "splits" / "clinic.csv").unlink()  # the split saw the extra class: make it again
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("stainshift: error")]
    assert len(errors) == 1 and message in errors[0]


def test_between_class_models_stay_out_of_harmonize_and_select(sim, capsys):
    assert "classcyclegan" in names(Kind.LEARNED) and "classcyclegan" not in names(images_only=True)
    assert main(["select", "--project", str(sim), "--src", "clinic", "--dst", "clinic", "--method",
                 "classcyclegan", "--quiet"]) == 2
    assert "stainshift rare select" in capsys.readouterr().err
    assert main(["train", "classcyclegan", "--project", str(sim), "--dst", "clinic", "--quiet", "--no-track"]) == 2
    assert "stainshift rare train" in capsys.readouterr().err
