"""The demo end to end on tiny settings: files on disk, the project it names, and the mlflow sqlite store."""

from __future__ import annotations

import json

import mlflow

from stainshift.demo import DemoSettings, run_demo
from stainshift.project import load_project


def test_tiny_demo_end_to_end(tmp_path):
    workdir = tmp_path / "demo"
    summary = run_demo(workdir, progress=False, settings=DemoSettings(per_class=8, size=64, epochs=2))
    project = load_project(workdir / "stainshift.toml")
    assert set(project.domains) == {"clinic", "hgtp"}
    assert project.cell_diameter == summary.domains["clinic"]["diameter_px"] > 0
    assert all((workdir / "runs" / "splits" / f"{d}.csv").exists() for d in ("clinic", "hgtp"))
    assert set(summary.accuracy) == {"clinic", "hgtp"} and all(0 <= a <= 1 for a in summary.accuracy.values())
    assert set(summary.harmonized) == {"reinhard", "macenko", "histogram"}
    saved = json.loads((workdir / "summary.json").read_text())
    assert saved["accuracy"] == summary.accuracy
    assert "stain shift costs" in (workdir / "summary.md").read_text()

    # the run is in the embedded sqlite store, with its metrics and the summary as an artifact
    assert project.tracking_uri.startswith("sqlite:///") and (workdir / "runs" / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=project.tracking_uri)
    experiment = client.get_experiment_by_name("demo")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["accuracy_clinic"] == summary.accuracy["clinic"]
    assert run.data.metrics["accuracy_hgtp_reinhard"] == summary.harmonized["reinhard"]
    assert run.data.params["per_class"] == "8"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["summary.md"]
    assert (workdir / "runs" / "mlartifacts").is_dir()
