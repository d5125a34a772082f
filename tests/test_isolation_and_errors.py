"""What makes the numbers trustworthy: the test split stays unread until reporting, a killed training resumes
bit-exactly, harmonize and select see the same pixels, the tiling path is taken when it should be, and every
command's bad input is a one-line error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from stainshift import runs
from stainshift.cli.main import main
from stainshift.data.datasets import center_crop_tensor, rescale, to_batch, to_uint8
from stainshift.data.io import read_image
from stainshift.data.splits import domain_split, samples_in
from stainshift.errors import ImageReadError
from stainshift.harmonize import HarmonizeRequest, harmonize, translate_images, translate_tiled
from stainshift.models.registry import load_translator
from stainshift.train.checkpoints import load
from stainshift.train.loop import TrainRequest, train

from .conftest import simulated_project

TINY = {"epochs": 1, "keep_epochs": (1,)}


def _networks(run) -> dict[str, torch.Tensor]:
    state = load(runs.last_state(run), "training state", "")["model"]["networks"]
    return {f"{n}.{k}": v for n, weights in state.items() for k, v in weights.items()}


def test_the_test_split_is_never_read_by_training_selection_or_fine_tuning(tmp_path):
    from stainshift.classify.evaluate import evaluate
    from stainshift.classify.train import ClassifierRequest, finetune_classifier, train_classifier
    from stainshift.select import select_epoch

    project = simulated_project(tmp_path, per_class=6, split=(0.5, 0.25, 0.25))
    for domain in ("clinic", "hgtp"):
        domain_split(project, domain)
        for sample in samples_in(project, domain, "test"):  # every test image becomes unreadable
            sample.path.write_bytes(b"not an image: reading me is a leak")
    run = train(project, TrainRequest("hgtp", "clinic", preset="tiny", run_id="g", progress=False, track=False,
                                      overrides={"epochs": 2, "keep_epochs": (1, 2)})).run_dir
    classifier = train_classifier(project, ClassifierRequest("clinic", size=32, epochs=1, batch_size=4,
                                                             progress=False, track=False))
    selection = select_epoch(project, "hgtp", "clinic", classifier=classifier, progress=False, track=False)
    assert selection.epoch in runs.kept_epochs(run)
    tuned = finetune_classifier(project, classifier, "hgtp", epochs=1, batch_size=4, progress=False, track=False)
    assert tuned.is_file()
    with pytest.raises(ImageReadError, match="not an image"):  # the corruption is real: reporting would read it
        evaluate(classifier, project, "hgtp", "test")


def test_resume_after_kill_9_is_bit_exact_with_a_decaying_learning_rate(tmp_path):
    project = simulated_project(tmp_path, per_class=10, split=(0.6, 0.2, 0.2))
    options = {"epochs": 2, "epochs_decay": 3, "keep_epochs": (5,)}
    whole = train(project, TrainRequest("hgtp", "clinic", preset="tiny", seed=4, run_id="whole", progress=False,
                                        track=False, overrides=options)).run_dir
    command = [sys.executable, "-m", "stainshift", "train", "cyclegan", "--src", "hgtp", "--dst", "clinic",
               "--preset", "tiny", "--seed", "4", "--run-id", "killed", "--epochs", "2", "--epochs-decay", "3",
               "--keep-epochs", "5", "--no-track", "--quiet", "--project", str(project.file)]
    child = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    run = runs.method_dir(project, "hgtp", "clinic", "cyclegan") / "killed"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        manifest = runs.manifest_file(run)
        if manifest.exists() and len(json.loads(manifest.read_text())["epochs"]) >= 3:  # inside the decay
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = load(runs.last_state(run), "training state", "")["epoch"]
    assert 3 <= done < 5
    resumed = train(project, TrainRequest("hgtp", "clinic", preset="tiny", seed=4, run_id="killed", resume=True,
                                          progress=False, track=False))
    assert resumed.epochs_done == 5
    a, b = _networks(whole), _networks(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_harmonize_takes_the_tiling_path_above_the_tile_size_and_select_sees_the_same_pixels(tmp_path):
    from stainshift.select import translate_and_crop

    project = simulated_project(tmp_path, per_class=3, split=(0.34, 0.33, 0.33))  # 40 px images
    run = train(project, TrainRequest("hgtp", "clinic", preset="tiny", seed=1, run_id="g", progress=False,
                                      track=False, overrides=TINY)).run_dir
    translator = load_translator(runs.epoch_file(run, 1))
    tiled = harmonize(project, HarmonizeRequest("hgtp", "clinic", epoch=1, tile=32, overlap=8, out=tmp_path / "t",
                                                progress=False)).out_dir
    whole = harmonize(project, HarmonizeRequest("hgtp", "clinic", epoch=1, out=tmp_path / "w",
                                                progress=False)).out_dir
    sample = samples_in(project, "hgtp", "val")[0]
    image = read_image(sample.path)
    x = to_batch([rescale(image, 1.0)])
    by_tiles = to_uint8(translate_tiled(translator, x[0], 32, 8)[None])[0]
    in_one = to_uint8(translate_images(translator, x, 512, 64))[0]
    assert np.array_equal(read_image(tiled / sample.key), by_tiles)
    assert np.array_equal(read_image(whole / sample.key), in_one)
    assert not np.array_equal(by_tiles, in_one)  # the two paths differ, so the first file proves tiles were used
    # select translates the validation image as harmonize does, then crops for the classifier
    selected = translate_and_crop(translator, [x[0]], 32, torch.device("cpu"))
    assert np.array_equal(to_uint8(selected)[0], to_uint8(center_crop_tensor(to_batch([in_one]), 32))[0])


def _one_line(capsys, argv: list[str], message: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.strip().count("\n") == 0, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    project = simulated_project(tmp_path_factory.mktemp("cli"), per_class=3, split=(0.34, 0.33, 0.33))
    train(project, TrainRequest("hgtp", "clinic", preset="tiny", run_id="g", progress=False, track=False,
                                overrides=TINY))
    return project


@pytest.mark.parametrize("argv, message", [
    (["train", "cyclegan", "--src", "hgtp", "--dst", "clinic", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "cyclegan", "--src", "hgtp", "--dst", "clinic", "--set", "ngf=0"], "ngf, ndf, n_layers_d must be"),
    (["train", "cyclegan", "--src", "hgtp", "--dst", "clinic", "--set", "colour=red"], "unknown option colour"),
    (["train", "cyclegan", "--src", "nowhere", "--dst", "clinic"], "unknown domain 'nowhere'"),
    (["train", "cyclegan", "--src", "hgtp", "--dst", "clinic", "--resume", "--run-id", "nope"], "to resume"),
    (["select", "--src", "hgtp", "--dst", "clinic", "--classifier", "missing.pt"], "no classifier file"),
    (["select", "--src", "hgtp", "--dst", "clinic", "--run-id", "nope"], "no cyclegan run 'nope'"),
    (["select", "--src", "hgtp", "--dst", "clinic", "--rule", "segmentation"], "scores mask-to-image runs"),
    (["harmonize", "--src", "hgtp", "--dst", "clinic", "--epoch", "9"], "epoch 9 was not kept"),
    (["harmonize", "--src", "hgtp", "--dst", "clinic", "--epoch", "best", "--rule", "label-free"],
     "no epoch selected by the label-free rule"),
    (["harmonize", "--src", "hgtp", "--dst", "clinic", "--epoch", "1", "--tile", "8"], "--tile 8"),
    (["harmonize", "--src", "hgtp", "--dst", "clinic", "--epoch", "1", "--overlap", "400"], "--overlap 400"),
    (["benchmark", "--src", "hgtp", "--dst", "clinic", "--classifiers", "vgg"], "unknown classifier 'vgg'"),
    (["benchmark", "--src", "hgtp", "--dst", "clinic", "--selection-seed", "0"], "must differ"),
    (["benchmark", "--src", "hgtp", "--dst", "clinic", "--boot", "5"], "--boot 5"),
])
def test_bad_input_is_a_one_line_error(trained, capsys, argv, message):
    _one_line(capsys, [*argv, "--project", str(trained.file)], message)


@pytest.mark.parametrize("argv", [
    ["harmonize", "--src", "hgtp", "--dst", "clinic", "--epoch", "soon"],
    ["benchmark", "--src", "hgtp", "--dst", "clinic", "--seeds", "a,b"],
    ["benchmark", "--src", "hgtp", "--dst", "clinic", "--stain-augment", "gamma"],
])
def test_malformed_arguments_are_refused_by_the_parser(trained, capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--project", str(trained.file)])
    assert exit_.value.code == 2 and "error:" in capsys.readouterr().err


def test_an_empty_class_folder_is_reported_by_inspect_and_split(tmp_path, capsys):
    from .conftest import make_domain

    make_domain(tmp_path / "site", {"neutrophil": 3, "lymphocyte": 3})
    (tmp_path / "site" / "monocyte").mkdir()
    assert main(["domains", "add", "site", str(tmp_path / "site"), "--project", str(tmp_path), "--quiet"]) == 0
    assert main(["domains", "inspect", "site", "--project", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "monocyte" in out and "EMPTY folder" in out
    assert main(["domains", "split", "site", "--project", str(tmp_path), "--quiet"]) == 0
    assert "class folder 'monocyte' of 'site' holds no image" in capsys.readouterr().err


def test_training_a_classifier_prints_no_dependency_deprecation_warning(tmp_path):
    from .conftest import make_domain

    make_domain(tmp_path / "site", {"neutrophil": 6, "lymphocyte": 6})
    code = ("import sys, warnings\nwarnings.simplefilter('always')\n"
            "from stainshift.cli.main import main\n"
            f"p = {str(tmp_path)!r}\n"
            "main(['domains', 'add', 'site', p + '/site', '--project', p, '--quiet'])\n"
            "sys.exit(main(['classify', 'train', '--domain', 'site', '--size', '32', '--epochs', '1', "
            "'--batch-size', '4', '--no-track', '--quiet', '--project', p]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs" / "classifiers" / "site-resnet18-group" / "model.pt").is_file()
    assert "torch.jit.script" not in done.stderr
