"""The accuracy-before/after benchmark on a tiny simulated pair: every condition, gap closed, files."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from stainshift.benchmark import BenchmarkRequest, run_benchmark
from stainshift.errors import StainshiftError
from stainshift.train.loop import TrainRequest, train

from .conftest import TINY_CYCLEGAN, simulated_project


def test_benchmark_table_structure_and_numbers(tmp_path):
    project = simulated_project(tmp_path, per_class=6, split=(0.5, 0.25, 0.25))
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="g", progress=False, track=False,
                                overrides={**TINY_CYCLEGAN, "epochs": 2, "keep_epochs": (1, 2)}))
    request = BenchmarkRequest("hgtp", "clinic", classifiers=("resnet18",), size=32, epochs=1, finetune_epochs=1,
                               batch_size=4, progress=False, track=False)
    frame = run_benchmark(project, request)
    assert frame.condition.tolist() == [
        "original", "reinhard", "macenko", "histogram", "cyclegan e1", "cyclegan e2",
        "cyclegan selected (label-free)", "cyclegan selected (labelled)", "fine-tuned on source (upper bound)"]
    assert (frame.n == frame.n.iloc[0]).all() and frame.n.iloc[0] > 0  # the same source test images throughout
    assert ((frame.ci_low <= frame.accuracy) & (frame.accuracy <= frame.ci_high)).all()
    original, upper = frame.accuracy.iloc[0], frame.accuracy.iloc[-1]
    for row in frame.itertuples():
        expected = (row.accuracy - original) / (upper - original) if upper != original else math.nan
        assert row.gap_closed == pytest.approx(expected, nan_ok=True)
    selected = frame[frame.condition.str.contains("selected")]
    assert set(selected.epoch) <= {1, 2}
    out = project.runs / "hgtp_to_clinic" / "benchmark"
    assert pd.read_csv(out / "benchmark.csv").shape[0] == len(frame)
    assert "gap closed" in (out / "benchmark.md").read_text() and (out / "accuracy_vs_epoch.png").exists()
    # a second run reuses the classifier and the harmonized images
    tuned = project.runs / "classifiers" / "clinic-resnet18-group-ft-hgtp"
    assert json.loads((tuned / "config.json").read_text())["balanced"] is False
    stamps = [p.stat().st_mtime_ns for p in (out / "images" / "reinhard" / "manifest.csv", tuned / "model.pt")]
    again = run_benchmark(project, request)
    assert [p.stat().st_mtime_ns for p in (out / "images" / "reinhard" / "manifest.csv", tuned / "model.pt")] == stamps
    assert again.accuracy.tolist() == frame.accuracy.tolist()  # same models, same images, same numbers
    # the run keeps the labelled choice (the rule that applies when labels exist), which harmonize --epoch best uses
    chosen = json.loads((project.runs / "hgtp_to_clinic" / "cyclegan" / "g" / "selected.json").read_text())
    labelled = frame[frame.condition == "cyclegan selected (labelled)"].epoch.iloc[0]
    assert (chosen["rule"], chosen["epoch"]) == ("labelled", labelled)
    # a newer GAN run gets its own harmonized images, never the older run's
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="g2", progress=False, track=False,
                                overrides={**TINY_CYCLEGAN, "epochs": 1, "keep_epochs": (1,)}))
    again = run_benchmark(project, request)
    assert again[again.method == "cyclegan"].epoch.tolist() == [1, 1, 1]
    assert (out / "images" / "cyclegan_g2_e1" / "manifest.csv").exists()
    with pytest.raises(StainshiftError, match="unknown classifier"):
        run_benchmark(project, BenchmarkRequest("hgtp", "clinic", classifiers=("vgg",), progress=False, track=False))


def test_benchmark_command_errors(tmp_path, capsys):
    from stainshift.cli.main import main

    project = simulated_project(tmp_path, per_class=2, split=(0.5, 0.25, 0.25))
    code = main(["benchmark", "--src", "hgtp", "--dst", "nowhere", "--project", str(project.file)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown domain 'nowhere'" in err and err.count("\n") == 1


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
