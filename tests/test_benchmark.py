"""The accuracy-before/after benchmark on a tiny simulated pair: every condition, gap closed, files."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import pytest

from stainshift.benchmark import BenchmarkRequest, run_benchmark
from stainshift.errors import StainshiftError
from stainshift.train.loop import TrainRequest, train

from .conftest import TINY_CYCLEGAN, simulated_project

REQUEST = {"classifiers": ("resnet18",), "size": 32, "epochs": 1, "finetune_epochs": 1, "batch_size": 4,
           "n_boot": 500, "progress": False, "track": False}


def test_benchmark_rows_selection_classifier_paired_statistics_and_caches(tmp_path):
    project = simulated_project(tmp_path, per_class=6, split=(0.5, 0.25, 0.25))
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="g", progress=False, track=False,
                                overrides={**TINY_CYCLEGAN, "epochs": 2, "keep_epochs": (1, 2)}))
    request = BenchmarkRequest("hgtp", "clinic", **REQUEST)
    result = run_benchmark(project, request)
    frame = result.table
    assert frame.condition.tolist() == [
        "original", "reinhard", "macenko", "histogram", "cyclegan e1", "cyclegan e2", "stain augmentation (hed)",
        "stain augmentation (lab)", "cyclegan selected (label-free)", "cyclegan selected (labelled)",
        "fine-tuned on source (upper bound)"]
    assert (frame.n == frame.n.iloc[0]).all() and frame.n.iloc[0] > 0  # the same source test images throughout

    # the epoch is chosen by the selection classifier, never by the classifier whose accuracy is reported
    run = project.runs / "hgtp_to_clinic" / "cyclegan" / "g"
    chosen = json.loads((run / "selected.json").read_text())
    assert chosen["rule"] == "labelled" and "select-s1" in chosen["classifier"]
    assert "clinic-resnet18-group/" not in chosen["classifier"]
    assert (run / "selections" / "label-free--clinic-resnet18-group-select-s1.json").is_file()
    selected = frame[frame.condition == "cyclegan selected (labelled)"].iloc[0]
    assert selected.epoch == chosen["epoch"] and selected.selected_by == "clinic-resnet18-group-select-s1"
    assert isinstance(selected.selection_reason, str) and selected.selection_reason

    # paired statistics: one resample set for every row, so a row equal to another has identical intervals, and
    # the original row's difference to itself is exactly 0
    by = frame.set_index("condition")
    epoch_row = by.loc[f"cyclegan e{int(selected.epoch)}"]
    for column in ("ci_low", "ci_high", "d_original_low", "d_original_high", "gap_low", "gap_high"):
        assert by.loc["cyclegan selected (labelled)", column] == pytest.approx(epoch_row[column], nan_ok=True)
    assert (by.loc["original", ["d_original", "d_original_low", "d_original_high"]] == 0).all()
    assert by.loc["original", "vs_original"] == "n.s."
    best_classical = max(("reinhard", "macenko", "histogram"), key=lambda m: by.loc[m, "accuracy"])
    assert by.loc[best_classical, "d_classical"] == 0  # the best classical method is the reference
    assert set(frame.vs_classical) <= {"better", "worse", "n.s."}
    assert len(result.summary) == len(frame) and result.summary.classifiers.eq(1).all()

    # provenance is read before the work, the per-epoch selection scores sit next to the tables
    out = project.runs / "hgtp_to_clinic" / "benchmark"
    made = json.loads((out / "provenance.json").read_text())
    assert made["commit"] and "dirty" in made and made["options"]["selection_seed"] == 1
    assert datetime.fromisoformat(made["started"]).timestamp() <= (out / "benchmark.csv").stat().st_mtime
    assert pd.read_csv(out / "selection_cyclegan_g.csv").epoch.tolist() == [0, 1, 2]
    text = (out / "benchmark.md").read_text()
    assert "vs best stain augmentation" in text and "## Selections" in text

    # a second run reuses everything and says so; the numbers are the same
    again = run_benchmark(project, request).table
    assert again.images_reused.fillna(True).all() and again.classifier_reused.all()
    assert again.accuracy.tolist() == frame.accuracy.tolist()
    # other classifier options: the classifiers are trained again, the harmonized images are kept
    other = run_benchmark(project, BenchmarkRequest("hgtp", "clinic", **{**REQUEST, "epochs": 2})).table
    assert not other.classifier_reused.any() and other.images_reused.fillna(True).all()
    # a newer GAN run gets its own harmonized images, never the older run's
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="g2", progress=False, track=False,
                                overrides={**TINY_CYCLEGAN, "epochs": 1, "keep_epochs": (1,)}))
    newer = run_benchmark(project, request).table
    assert newer[newer.method == "cyclegan"].epoch.tolist() == [1, 1, 1]
    assert not newer[newer.condition == "cyclegan e1"].images_reused.iloc[0]
    assert (out / "images" / "cyclegan_g2_e1" / "manifest.csv").exists()
    with pytest.raises(StainshiftError, match="unknown classifier"):
        run_benchmark(project, BenchmarkRequest("hgtp", "clinic", classifiers=("vgg",), progress=False, track=False))
    with pytest.raises(StainshiftError, match="must differ from the reported classifiers"):
        run_benchmark(project, BenchmarkRequest("hgtp", "clinic", **{**REQUEST, "selection_seed": 0}))


def test_benchmark_over_gan_seeds_reports_their_spread(tmp_path):
    project = simulated_project(tmp_path, per_class=6, split=(0.5, 0.25, 0.25))
    for seed in (0, 1):
        train(project, TrainRequest(src="hgtp", dst="clinic", run_id=f"s{seed}", seed=seed, progress=False,
                                    track=False, overrides={**TINY_CYCLEGAN, "epochs": 2, "keep_epochs": (1, 2)}))
    result = run_benchmark(project, BenchmarkRequest("hgtp", "clinic", gan_seeds=(0, 1),
                                                     **{**REQUEST, "stain_augment": ()}))
    conditions = result.table.condition.tolist()
    assert {"cyclegan s0 e1", "cyclegan s0 e2", "cyclegan s1 e1", "cyclegan s1 e2"} <= set(conditions)
    assert {"cyclegan s0 selected (labelled)", "cyclegan s1 selected (label-free)"} <= set(conditions)
    seeds = result.seeds.set_index("rule")
    assert seeds.loc["labelled", "seeds"] == 2 and seeds.loc["label-free", "seeds"] == 2
    for rule in ("labelled", "label-free"):
        row = seeds.loc[rule]
        assert row.worst_mean <= row.selected_mean <= row.best_mean
        assert row.selected_min <= row.selected_mean <= row.selected_max
    with pytest.warns(UserWarning, match="no run with seed 7"):
        run_benchmark(project, BenchmarkRequest("hgtp", "clinic", gan_seeds=(0, 7),
                                                **{**REQUEST, "stain_augment": ()}))
    # seeds asked for and not one trained: refused before any work, not a table of classical rows only
    with pytest.raises(StainshiftError, match=r"no trained run with seed 5, 6 for hgtp -> clinic.*--seed N"):
        run_benchmark(project, BenchmarkRequest("hgtp", "clinic", gan_seeds=(5, 6), **REQUEST))
    with pytest.raises(StainshiftError, match=r"no trained run whose id starts with 'cpu-' with seed 0"):
        run_benchmark(project, BenchmarkRequest("hgtp", "clinic", gan_seeds=(0,), run_prefix="cpu-", **REQUEST))


def test_benchmark_command_errors(tmp_path, capsys):
    from stainshift.cli.main import main

    project = simulated_project(tmp_path, per_class=2, split=(0.5, 0.25, 0.25))
    code = main(["benchmark", "--src", "hgtp", "--dst", "nowhere", "--project", str(project.file)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown domain 'nowhere'" in err and err.count("\n") == 1
    # more shots than the source's train split holds: refused before any work, with the sizes that fit
    code = main(["benchmark", "--src", "hgtp", "--dst", "clinic", "--shots", "0,2,500", "--project",
                 str(project.file), "--quiet"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the split's own warnings about this tiny domain
    assert code == 2 and "--shots 500: 'hgtp' has only" in last and "(e.g. --shots 0,2)" in last
    assert "Traceback" not in err
    assert not (project.runs / "hgtp_to_clinic" / "benchmark").exists()  # nothing was started


def test_colorization_trained_for_one_source_serves_every_source(tmp_path):
    """ColorizationGAN learns from the target alone, so one run serves all sources of that target; CycleGAN,
    which learns the pair, never does."""
    from stainshift.data.simulate import simulate
    from stainshift.harmonize import HarmonizeRequest, harmonize
    from stainshift.runs import serving_run

    simulate(tmp_path / "data", hospitals=["site3"], per_class=3, size=40, seed=1, classes=("lymphocyte",))
    project = simulated_project(tmp_path, per_class=3, split=(0.5, 0.25, 0.25), extra=("site3",))
    tiny = {"ngf": 4, "num_downs": 3, "ndf": 4, "crop_size": 32, "load_size": 32, "batch_size": 2, "epochs": 1,
            "epochs_decay": 0, "keep_epochs": (1,)}
    run = train(project, TrainRequest(src="hgtp", dst="clinic", method="colorization", run_id="c", progress=False,
                                      track=False, overrides=tiny)).run_dir
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="g", progress=False, track=False,
                                overrides={**TINY_CYCLEGAN, "epochs": 1, "keep_epochs": (1,)}))
    assert serving_run(project, "site3", "clinic", "colorization") == run
    assert serving_run(project, "site3", "clinic", "cyclegan") is None
    assert serving_run(project, "site3", "hgtp", "colorization") is None  # another target
    result = harmonize(project, HarmonizeRequest("site3", "clinic", method="colorization", epoch=1,
                                                 out=tmp_path / "out", progress=False))
    assert result.n_images == 3 and result.epoch == 1
    with pytest.raises(StainshiftError, match="no trained cyclegan run for site3 -> clinic"):
        harmonize(project, HarmonizeRequest("site3", "clinic", epoch=1, out=tmp_path / "out2", progress=False))


def test_label_curve_fine_tunes_copies_on_the_same_draws_and_pairs_them_with_the_original(tmp_path):
    from stainshift.data.splits import samples_in
    from stainshift.label_curve import draw

    project = simulated_project(tmp_path, per_class=8, split=(0.5, 0.25, 0.25))
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="g", progress=False, track=False,
                                overrides={**TINY_CYCLEGAN, "epochs": 1, "keep_epochs": (1,)}))
    result = run_benchmark(project, BenchmarkRequest("hgtp", "clinic", **REQUEST, shots=(0, 4), shot_draws=2,
                                                     stain_augment=("lab",)))
    curve = result.curve
    assert set(curve.condition) >= {"original", "cyclegan selected (labelled)", "stain augmentation (lab)"}
    assert set(curve.k) == {0, 4}
    assert (curve[curve.k == 0].draws == 1).all() and (curve[curve.k == 4].draws == 2).all()
    # k = 0 is the classifier as it is: the benchmark's own row
    by = result.table.set_index("condition")
    zero = curve[curve.k == 0].set_index("condition")
    assert zero.loc["original", "accuracy"] == pytest.approx(by.loc["original", "accuracy"])
    assert (zero.loc["cyclegan selected (labelled)", "accuracy"]
            == pytest.approx(by.loc["cyclegan selected (labelled)", "accuracy"]))
    assert (curve[curve.condition == "original"].d_original == 0).all()
    assert set(curve.vs_original) <= {"better", "worse", "n.s."}
    # the draws are seeded and differ from one draw to the next
    train_split = samples_in(project, "hgtp", "train")
    assert [s.key for s in draw(train_split, 4, 0, 1)] == [s.key for s in draw(train_split, 4, 0, 1)]
    assert [s.key for s in draw(train_split, 4, 0, 0)] != [s.key for s in draw(train_split, 4, 0, 1)]
    out = project.runs / "hgtp_to_clinic" / "benchmark"
    assert (out / "label_curve.csv").is_file() and (out / "label_curve.png").is_file()
    assert "## Labelled source images" in (out / "benchmark.md").read_text()


def test_finetune_copy_changes_the_copy_only():
    import torch

    from stainshift.classify.models import build_classifier
    from stainshift.label_curve import finetune_copy

    torch.manual_seed(0)
    clf = build_classifier("resnet18", 2, "group", None, ["a", "b"], 32)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 0, 1, 0, 1])
    tuned = finetune_copy(clf, x, y, epochs=2)
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in tuned.state_dict().items())
    assert not tuned.training
