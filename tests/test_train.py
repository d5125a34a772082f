"""Training runs on tiny simulated hospitals: files on disk, exact resume, Ctrl-C safety, mlflow, DDP (gloo)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from stainshift.data.domains import Sample
from stainshift.errors import StainshiftError
from stainshift.project import Project
from stainshift.train.batches import class_weights, epoch_plan
from stainshift.train.checkpoints import load
from stainshift.train.loop import TrainRequest, train

from .conftest import TINY_CYCLEGAN, simulated_project

TINY = TINY_CYCLEGAN


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    return simulated_project(tmp_path_factory.mktemp("tiny"), per_class=4, split=(0.5, 0.25, 0.25), masks=True)


def _request(run_id: str, epochs: int, **kw) -> TrainRequest:
    return TrainRequest(src="hgtp", dst="clinic", run_id=run_id, seed=1, progress=False, track=False,
                        overrides={**TINY, "epochs": epochs, "keep_epochs": (2, 4)}, **kw)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    networks = load(run_dir / "last.pt", "training state", "")["model"]["networks"]
    return {f"{net}.{k}": v for net, state in networks.items() for k, v in state.items()}


def test_run_layout_and_exact_resume(project):
    whole = train(project, _request("whole", 4))
    assert whole.epochs_done == 4
    run = whole.run_dir
    assert run == project.runs / "hgtp_to_clinic" / "cyclegan" / "whole"
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["epochs"] == 4 and config["preset"] == "cpu" and config["splits"]["hgtp"]
    assert sorted(p.name for p in (run / "epochs").iterdir()) == ["epoch_002.pt", "epoch_004.pt"]
    assert len(list((run / "samples").glob("epoch_*.png"))) == 4
    manifest = json.loads((run / "manifest.json").read_text())["epochs"]
    assert [e["epoch"] for e in manifest] == [1, 2, 3, 4]
    assert all(e["losses"] and all(math.isfinite(v) for v in e["losses"].values()) for e in manifest)
    epoch_file = torch.load(run / "epochs" / "epoch_004.pt", weights_only=False)
    assert epoch_file["model"] == "cyclegan" and epoch_file["epoch"] == 4 and "options" in epoch_file

    first = train(project, _request("split", 2))
    assert first.epochs_done == 2
    resumed = train(project, _request("split", 4, resume=True))
    assert resumed.epochs_done == 4
    a, b = _weights(whole.run_dir), _weights(resumed.run_dir)
    assert a.keys() == b.keys() and len(a) > 10
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_interrupt_leaves_a_valid_last_state(project):
    def interrupt(epoch: int, step: int) -> None:
        if epoch == 3 and step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(project, _request("ctrl-c", 4), on_iteration=interrupt)
    run = project.runs / "hgtp_to_clinic" / "cyclegan" / "ctrl-c"
    assert load(run / "last.pt", "training state", "")["epoch"] == 2
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]  # no half-written files
    resumed = train(project, _request("ctrl-c", 4, resume=True))
    whole = train(project, _request("whole-2", 4))
    a, b = _weights(resumed.run_dir), _weights(whole.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_errors(project):
    with pytest.raises(StainshiftError, match="no colorization run"):
        train(project, TrainRequest(src="hgtp", dst="clinic", method="colorization", resume=True, progress=False))
    train(project, _request("guarded", 1))
    with pytest.raises(StainshiftError, match="cannot change"):
        train(project, TrainRequest(src="hgtp", dst="clinic", run_id="guarded", resume=True, progress=False,
                                    track=False, overrides={**TINY, "ngf": 8}))
    with pytest.raises(StainshiftError, match="exists"):
        train(project, _request("guarded", 1))
    with pytest.raises(StainshiftError, match="unknown domain 'hgpt'"):
        train(project, TrainRequest(src="hgpt", dst="clinic", progress=False))


def test_mlflow_logs_params_epoch_metrics_and_artifacts(project):
    request = TrainRequest(src="hgtp", dst="clinic", run_id="tracked", seed=0, progress=False, track=True,
                           overrides={**TINY, "epochs": 2, "keep_epochs": (2,)})
    result = train(project, request)
    run_id = json.loads((result.run_dir / "config.json").read_text())["mlflow_run_id"]
    client = mlflow.MlflowClient(tracking_uri=project.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["opt.ngf"] == "4"
    history = client.get_metric_history(run_id, "loss_G_cycle") or client.get_metric_history(run_id, next(
        k for k in run.data.metrics if k.startswith("loss_")))
    assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"samples", "epochs"} <= artifacts
    assert [a.path for a in client.list_artifacts(run_id, "epochs")] == ["epochs/epoch_002.pt"]


def test_colorization_trains_on_the_target_only(project):
    request = TrainRequest(src="hgtp", dst="clinic", method="colorization", run_id="color", progress=False,
                           track=False, overrides={"ngf": 4, "crop_size": 32, "load_size": 32, "epochs": 1,
                                                   "epochs_decay": 0, "keep_epochs": (1,), "batch_size": 2})
    result = train(project, request)
    assert (result.run_dir / "epochs" / "epoch_001.pt").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is exercised on Linux")
def test_ddp_gloo_two_processes(project):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    options = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "stainshift", "train", "cyclegan", "--src", "hgtp", "--dst", "clinic", "--epochs", "2",
           "--run-id", "ddp", "--keep-epochs", "2", "--no-track", "--quiet", "--device", "cpu",
           "--project", str(project.file), *options]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run = project.runs / "hgtp_to_clinic" / "cyclegan" / "ddp"
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2
    assert load(run / "last.pt", "training state", "")["epoch"] == 2


def test_epoch_plan_runs_over_the_right_domain_and_balances_classes():
    uniform_src, uniform_dst = torch.ones(5, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
    pairs = epoch_plan(uniform_src, uniform_dst, seed=0, epoch=1)
    assert len(pairs) == 5 and sorted(p[0] for p in pairs) == list(range(5))  # one item per source image
    target_only = epoch_plan(uniform_src, uniform_dst, seed=0, epoch=1, over_target=True)
    assert len(target_only) == 8 and sorted(p[1] for p in target_only) == list(range(8))
    assert epoch_plan(uniform_src, uniform_dst, seed=0, epoch=2) != pairs
    assert epoch_plan(uniform_src, uniform_dst, seed=0, epoch=1) == pairs
    # class-balanced: a class with 1 image of 10 is drawn about half the time, not a tenth
    labels = ["rare"] + ["common"] * 9
    weights = class_weights([Sample(str(i), lab, Path(str(i)), None) for i, lab in enumerate(labels)], balanced=True)
    many = epoch_plan(torch.ones(2000, dtype=torch.float64), weights, seed=0, epoch=1)
    share = sum(p[1] == 0 for p in many) / len(many)
    assert 0.4 < share < 0.6


def test_a_run_saved_before_an_option_existed_resumes(project):
    """Runs trained before ema_decay / upsample existed have no such keys: they resume with the defaults."""
    first = train(project, _request("older", 1))
    state_file = first.run_dir / "last.pt"
    state = torch.load(state_file, weights_only=False)
    for key in ("ema_decay", "upsample"):
        del state["config"]["options"][key]
    torch.save(state, state_file)
    resumed = train(project, _request("older", 2, resume=True))
    assert resumed.epochs_done == 2
