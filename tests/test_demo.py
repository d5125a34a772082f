"""The demo end to end on tiny settings: files on disk, the project it names, the benchmark table, the selected
epoch's harmonized images, and the mlflow sqlite store."""

from __future__ import annotations

import json
import math

import mlflow
import pytest

from stainshift.data.io import read_image
from stainshift.data.splits import samples_in
from stainshift.demo import DemoSettings, run_demo
from stainshift.project import load_project

TINY = DemoSettings(per_class=8, size=64, classifier_size=48, classifier_epochs=2, finetune_epochs=1, gan_epochs=2,
                    gan_options=(("ngf", 8), ("ndf", 8), ("n_blocks", 1), ("crop_size", 32), ("load_size", 32)),
                    seed=1)  # not 0: `demo --seed 1` once clashed with the benchmark's selection classifier (seed 1)


def test_tiny_demo_end_to_end(tmp_path):
    workdir = tmp_path / "demo"
    summary = run_demo(workdir, progress=False, settings=TINY)
    project = load_project(workdir / "stainshift.toml")
    assert set(project.domains) == {"clinic", "hgtp"}
    assert project.cell_diameter == summary.domains["clinic"]["diameter_px"] > 0
    assert all((workdir / "runs" / "splits" / f"{d}.csv").exists() for d in ("clinic", "hgtp"))

    # the benchmark table: every condition once, in order, on hgtp's test split
    conditions = [t["condition"] for t in summary.table]
    assert conditions == ["original", "reinhard", "macenko", "histogram", "cyclegan e1", "cyclegan e2",
                          "stain augmentation (hed)", "stain augmentation (lab)", "cyclegan selected (label-free)",
                          "cyclegan selected (labelled)", "fine-tuned on source (upper bound)"]
    n_test = len(samples_in(project, "hgtp", "test"))
    assert all(t["n"] == n_test for t in summary.table)
    original, tuned = summary.table[0], summary.table[-1]
    assert original["accuracy"] == summary.accuracy["hgtp"]  # the same classifier on the same images
    if tuned["accuracy"] == original["accuracy"]:  # no gap to close: "gap closed" is undefined, not 0 or 1
        assert all(math.isnan(t["gap_closed"]) for t in summary.table)
    else:
        assert (original["gap_closed"], tuned["gap_closed"]) == (0, 1)
    # paired: the original row's difference to itself is 0; the fine-tuned bound is its own reference for the gap
    assert (original["d_original"], original["vs_original"]) == (0, "n.s.")
    for rule in ("labelled", "label-free"):
        picked = next(t for t in summary.table if t["condition"] == f"cyclegan selected ({rule})")
        same = next(t for t in summary.table if t["condition"] == f"cyclegan e{summary.selected[rule]}")
        assert picked["accuracy"] == same["accuracy"]

    # the epoch was picked by a classifier other than the reported one (seed + 1)
    classifiers = workdir / "runs" / "classifiers"
    assert (classifiers / "clinic-resnet18-group-select-s2" / "model.pt").exists()

    # harmonize --epoch best used the labelled choice and mirrored every hgtp image
    (run,) = (workdir / "runs" / "hgtp_to_clinic" / "cyclegan").glob("demo-*")
    selected = json.loads((run / "selected.json").read_text())
    assert (selected["rule"], selected["epoch"]) == ("labelled", summary.selected["labelled"])
    assert str(selected["classifier"]).endswith("clinic-resnet18-group-select-s2/model.pt")
    harmonized = workdir / "runs" / "hgtp_to_clinic" / "cyclegan" / "harmonized"
    for sample in samples_in(project, "hgtp", None):
        assert read_image(harmonized / sample.key).shape == read_image(sample.path).shape
    grid = read_image(workdir / "before_after.png")
    assert grid.shape[0] > 4 * 96 and grid.std() > 10

    saved = json.loads((workdir / "summary.json").read_text())
    assert saved["accuracy"] == summary.accuracy and saved["selected"] == summary.selected
    text = (workdir / "summary.md").read_text()
    assert "stain shift costs" in text and "cyclegan selected (labelled)" in text
    assert set(saved["stage_seconds"]) == {"data", "train-cyclegan", "benchmark", "harmonize", "report", "summary"}
    page = (workdir / "runs" / "hgtp_to_clinic" / "report" / "index.html").read_text()
    assert saved["files"]["report"].endswith("report/index.html") and "cyclegan selected (labelled)" in page

    # the demo is the recipe pipelines/paper_blocks_1_2.toml on the simulated hospitals (colorization left out)
    state = json.loads(next((workdir / "runs" / "pipelines").glob("paper_blocks_1_2-*.json")).read_text())
    assert list(state["steps"]) == ["train-cyclegan", "benchmark", "harmonize", "report"]
    assert state["steps"]["train-cyclegan"]["command"][:6] == ["train", "cyclegan", "--src", "hgtp", "--dst",
                                                               "clinic"]

    # the run is in the embedded sqlite store, with its metrics and artifacts
    assert project.tracking_uri.startswith("sqlite:///") and (workdir / "runs" / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=project.tracking_uri)
    experiment = client.get_experiment_by_name("demo")
    (demo_run,) = client.search_runs([experiment.experiment_id])
    assert demo_run.data.metrics["accuracy_clinic"] == summary.accuracy["clinic"]
    assert demo_run.data.metrics["accuracy_hgtp_reinhard"] == summary.table[1]["accuracy"]
    assert demo_run.data.params["per_class"] == "8"
    artifacts = {a.path for a in client.list_artifacts(demo_run.info.run_id)}
    assert artifacts == {"summary.md", "benchmark.md", "accuracy_vs_epoch.png", "before_after.png"}
    gan_run = client.get_run(json.loads((run / "config.json").read_text())["mlflow_run_id"])
    assert len(client.get_metric_history(gan_run.info.run_id, "loss_G")) == TINY.gan_epochs

    # run again in the same folder: the recipe's steps are up to date and skipped, the figures are the same
    again = run_demo(workdir, progress=False, settings=TINY)
    assert again.accuracy == summary.accuracy and again.selected == summary.selected
    assert set(again.stage_seconds) == {"data", "summary"}
    assert len(list((workdir / "runs" / "hgtp_to_clinic" / "cyclegan").glob("demo-*"))) == 1


def test_a_demo_folder_with_other_settings_is_refused(tmp_path):
    from stainshift.errors import StainshiftError

    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / "summary.json").write_text(json.dumps({"settings": {"per_class": 30, "tracking_uri": "x"}}))
    with pytest.raises(StainshiftError, match=r"holds a demo run with other settings \(30 images per class\).*"
                       "--workdir"):
        run_demo(workdir, progress=False, settings=TINY)
    assert sorted(p.name for p in workdir.iterdir()) == ["summary.json"]  # nothing written
