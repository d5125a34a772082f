"""The mlflow model registry on a real sqlite store: register a selected tiny CycleGAN epoch, harmonize from
``models:/NAME/VERSION`` (byte-identical to ``--epoch N``), the fetched file's sha check, one-line errors."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import mlflow
import pytest

from stainshift.cli.main import main
from stainshift.data.io import list_images
from stainshift.errors import StainshiftError
from stainshift.harmonize import HarmonizeRequest, harmonize
from stainshift.model_registry import fetch, list_models, model_name, register, resolve
from stainshift.runs import epoch_file, registry_cache
from stainshift.select import select_epoch
from stainshift.train.checkpoints import file_hash
from stainshift.train.loop import TrainRequest, train

from .conftest import TINY_CYCLEGAN, simulated_project

NAME = model_name("hgtp", "clinic", "cyclegan")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tracked tiny CycleGAN run (2 kept epochs) on the project's sqlite store, with a label-free selection."""
    project = simulated_project(tmp_path_factory.mktemp("registry"), per_class=3, split=(0.34, 0.33, 0.33))
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="r1", progress=False, track=True,
                                overrides={**TINY_CYCLEGAN, "epochs": 2, "keep_epochs": (1, 2)}))
    with warnings.catch_warnings():  # two tiny epochs do not beat the untranslated images: select says so
        warnings.simplefilter("ignore", UserWarning)
        select_epoch(project, "hgtp", "clinic", rule="label-free", ssim_min=0.0, progress=False)
    return project


@pytest.fixture(scope="module")
def first(project):
    return register(project, "hgtp", "clinic")


def _outputs(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in list_images(folder)}


def _manifest(folder) -> list[dict[str, str]]:
    """The manifest's rows without the output path (which names the folder)."""
    return [{k: v for k, v in row.items() if k != "output"} for row in csv.DictReader((folder / "manifest.csv").open())]


def test_register_logs_the_epoch_file_with_its_scores_and_provenance(project, first):
    version, new = first
    run = project.runs / "hgtp_to_clinic" / "cyclegan" / "r1"
    selection = json.loads((run / "selected.json").read_text())
    assert new and version.uri == f"models:/{NAME}/1" and version.name == "stainshift-hgtp_to_clinic-cyclegan"
    assert (version.src, version.dst, version.method, version.rule) == ("hgtp", "clinic", "cyclegan", "label-free")
    assert version.epoch == selection["epoch"]
    assert version.checkpoint == file_hash(epoch_file(run, version.epoch))
    row = next(r for r in selection["scores"] if r["epoch"] == version.epoch)
    assert version.scores["ssim"] == pytest.approx(row["ssim"]) and version.scores["color"] == pytest.approx(
        row["color"])
    config = json.loads((run / "config.json").read_text())
    assert version.tags["stainshift.training_mlflow_run"] == config["mlflow_run_id"]
    assert version.tags["stainshift.code_version"] == config["code_version"]
    assert version.tags["stainshift.run_id"] == "r1" and version.tags["stainshift.registered_commit"]
    # the registry itself (read with mlflow, not with our code): the version's run holds the file and the record
    client = mlflow.MlflowClient(tracking_uri=project.tracking_uri, registry_uri=project.tracking_uri)
    stored = client.get_model_version(NAME, "1")
    assert stored.tags["stainshift.epoch"] == str(version.epoch) and stored.status == "READY"
    assert {a.path for a in client.list_artifacts(stored.run_id, "model")} == {
        f"model/epoch_{version.epoch:03d}.pt", "model/selection.json"}
    assert project.tracking_uri.startswith("sqlite:///") and (project.runs / "mlflow.db").is_file()


def test_a_checkpoint_is_registered_once_and_a_named_epoch_gets_its_own_version(project, first):
    again, new = register(project, "hgtp", "clinic")
    assert not new and again.version == first[0].version
    other = 3 - first[0].epoch  # the other kept epoch (1 or 2)
    manual, new = register(project, "hgtp", "clinic", epoch=other)
    assert new and manual.version == 2 and manual.epoch == other and manual.rule == "manual"
    assert resolve(project, f"models:/{NAME}/latest").version == 2
    assert [v.version for v in list_models(project)] == [1, 2]


def test_harmonize_from_the_registry_matches_the_epoch_byte_for_byte(project, first, tmp_path, capsys):
    version = first[0]
    by_epoch = harmonize(project, HarmonizeRequest("hgtp", "clinic", method="cyclegan", epoch=version.epoch,
                                                   out=tmp_path / "epoch", progress=False))
    by_model = harmonize(project, HarmonizeRequest("hgtp", "clinic", method="cyclegan", model=version.uri,
                                                   out=tmp_path / "model", progress=False))
    assert by_model.epoch == by_epoch.epoch == version.epoch and by_model.checkpoint == by_epoch.checkpoint
    assert _outputs(tmp_path / "model") == _outputs(tmp_path / "epoch") and len(_outputs(tmp_path / "epoch")) == 6
    assert _manifest(tmp_path / "model") == _manifest(tmp_path / "epoch")
    # the command line, --src/--dst/--method taken from the version
    code = main(["harmonize", "--model", version.uri, "--out", str(tmp_path / "cli"), "--project",
                 str(project.file), "--quiet"])
    assert code == 0 and _outputs(tmp_path / "cli") == _outputs(tmp_path / "epoch")
    code = main(["harmonize", "--model", version.uri, "--out", str(tmp_path / "cli2"), "--project",
                 str(project.file)])
    out = capsys.readouterr().out
    assert code == 0 and f"epoch {version.epoch} ({version.uri})" in out


def test_the_python_api_takes_pair_and_method_from_the_model_and_pins_latest(project, first, tmp_path):
    version = first[0]
    alone = harmonize(project, HarmonizeRequest(model=version.uri, out=tmp_path / "alone", progress=False))
    by_epoch = harmonize(project, HarmonizeRequest("hgtp", "clinic", epoch=version.epoch, out=tmp_path / "epoch",
                                                   progress=False))
    assert (alone.method, alone.model, alone.epoch) == ("cyclegan", version.uri, version.epoch)
    assert _outputs(tmp_path / "alone") == _outputs(tmp_path / "epoch") and by_epoch.model is None
    latest = harmonize(project, HarmonizeRequest(model=f"models:/{NAME}/latest", out=tmp_path / "latest",
                                                 progress=False))
    pinned = resolve(project, f"models:/{NAME}/latest")
    assert latest.model == pinned.uri and re.fullmatch(rf"models:/{NAME}/\d+", latest.model)
    with pytest.raises(StainshiftError, match="needs --src and --dst"):
        harmonize(project, HarmonizeRequest(dst="clinic", out=tmp_path / "none", progress=False))


def test_mlflow_ui_as_the_docs_start_it_shows_the_runs_and_the_registered_model(project, first):
    """docs/deployment.md: `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` in the project folder."""
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if exe is None:
        pytest.skip("no mlflow command on PATH or beside this Python")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([exe, "ui", "--backend-store-uri", "sqlite:///runs/mlflow.db", "--port", str(port)],
                              cwd=project.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)

    def get(path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return json.loads(response.read())

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                experiments = get("/api/2.0/mlflow/experiments/search?max_results=100")["experiments"]
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mlflow ui did not start: {server.stderr.read().decode()[-2000:]}") from None
                time.sleep(1)
        config = json.loads((project.runs / "hgtp_to_clinic" / "cyclegan" / "r1" / "config.json").read_text())
        run = get(f"/api/2.0/mlflow/runs/get?run_id={config['mlflow_run_id']}")["run"]
        assert run["info"]["experiment_id"] in {e["experiment_id"] for e in experiments}
        models = get("/api/2.0/mlflow/registered-models/search")["registered_models"]
        assert NAME in {m["name"] for m in models}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_a_damaged_cached_copy_is_fetched_again(project, first):
    version = first[0]
    cached = fetch(project, version)
    assert cached.parent == registry_cache(project, NAME, version.version)
    cached.write_bytes(b"not an epoch file")
    again = fetch(project, version)
    assert again == cached and file_hash(again) == version.checkpoint


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "runs:/abc/model"], "use models:/NAME/VERSION"),
    (["--model", "models:/nothing/1"], "no registered model 'nothing'.*stainshift models register"),
    (["--model", f"models:/{NAME}/9"], f"model '{NAME}' has no version 9 \\(versions: 1"),
    (["--model", f"models:/{NAME}@champion"], "has no alias 'champion'"),
    (["--model", f"models:/{NAME}/1", "--src", "clinic"], "not --src clinic; drop --src"),
    (["--model", f"models:/{NAME}/1", "--method", "colorization"], "not --method colorization"),
    (["--model", f"models:/{NAME}/1", "--epoch", "7"], "not --epoch 7; drop --epoch"),
    (["--model", f"models:/{NAME}/1", "--run-id", "r1"], "drop --run-id"),
    (["--src", "hgtp"], "needs --src and --dst"),
])
def test_harmonize_model_errors_are_one_line(project, first, tmp_path, capsys, argv, message):
    code = main(["harmonize", *argv, "--out", str(tmp_path / "o"), "--project", str(project.file), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert re.search(message, err), err


def test_register_errors(project):
    with pytest.raises(StainshiftError, match="not a learned stain translation"):
        register(project, "hgtp", "clinic", method="reinhard")
    with pytest.raises(StainshiftError, match=r"no trained cyclegan run for clinic -> hgtp"):
        register(project, "clinic", "hgtp")
    with pytest.raises(StainshiftError, match="unknown domain 'nowhere'"):
        register(project, "nowhere", "clinic")


def test_cli_models_register_and_list(project, first, capsys):
    code = main(["models", "register", "--src", "hgtp", "--dst", "clinic", "--project", str(project.file)])
    out = capsys.readouterr().out
    assert code == 0 and f"already registered: {first[0].uri}" in out and "next: stainshift harmonize --model" in out
    code = main(["models", "list", "--project", str(project.file)])
    out = capsys.readouterr().out
    assert code == 0 and f"{first[0].uri}  hgtp -> clinic  cyclegan epoch {first[0].epoch} of r1" in out
    assert "rule label-free" in out and "ssim" in out


def test_models_help_has_examples(capsys):
    for argv in (["models"], ["models", "register"], ["models", "list"]):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        assert exit_.value.code == 0 and "example" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["harmonize", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--model" in out and "torchrun --nproc_per_node" in out
