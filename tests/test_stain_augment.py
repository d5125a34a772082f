"""Stain augmentation (HED jitter, L*a*b* RandStainNA) and its use in classifier training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stainshift.classify.models import load_classifier
from stainshift.classify.stain_augment import (
    AUGMENTS,
    HedJitter,
    LabJitter,
    evenly_spaced,
    lab_mean_std,
    stain_augmenter,
)
from stainshift.classify.train import ClassifierRequest, train_classifier
from stainshift.errors import DataError, StainshiftError
from stainshift.project import Project

from .conftest import cell_image, simulated_project

FAST = {"size": 32, "epochs": 1, "batch_size": 4, "seed": 1, "progress": False, "track": False}


def _gray(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _targets(n: int = 40) -> list[np.ndarray]:
    """Cell images of one 'hospital' whose stain tint varies from image to image."""
    rng = np.random.default_rng(7)
    return [cell_image(rng, 48, tint=tuple(int(v) for v in rng.normal((190, 120, 200), 12))) for _ in range(n)]


def test_outputs_are_uint8_images_of_the_input_shape(rng):
    image = cell_image(rng, 40)[:30]  # not square
    for augmenter in (stain_augmenter("hed"), stain_augmenter("lab", _targets(5))):
        out = augmenter(image, rng)
        assert out.shape == image.shape and out.dtype == np.uint8
    with pytest.raises(StainshiftError, match="HxWx3 uint8"):
        stain_augmenter("hed")(image.astype(np.float32), rng)


def test_hed_jitter_is_the_identity_at_sigma_zero(rng):
    noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # every grey level, black and white included
    for image in (cell_image(rng, 64), noise):
        out = stain_augmenter("hed", sigma=0.0)(image, rng)
        assert np.abs(out.astype(int) - image).max() <= 2


def test_hed_jitter_changes_colour_but_keeps_the_structure(rng):
    image = cell_image(rng, 64)
    jitter = stain_augmenter("hed", sigma=0.05)
    assert isinstance(jitter, HedJitter) and jitter.params() == {"kind": "hed", "sigma": 0.05}
    outs = [jitter(image, rng) for _ in range(20)]
    shifts = [np.abs(out.reshape(-1, 3).mean(0) - image.reshape(-1, 3).mean(0)).max() for out in outs]
    assert np.mean(shifts) > 2  # colour moves by a few grey levels on average
    assert not np.array_equal(outs[0], outs[1])  # each draw differs
    for out in outs:
        assert np.corrcoef(_gray(image).ravel(), _gray(out).ravel())[0, 1] > 0.9
    strong = [stain_augmenter("hed", sigma=0.2)(image, rng) for _ in range(20)]
    assert np.mean([np.abs(o.astype(int) - image).mean() for o in strong]) > np.mean(
        [np.abs(o.astype(int) - image).mean() for o in outs])


def test_lab_draws_follow_the_fitted_target_distribution(rng):
    targets = _targets()
    augment = stain_augmenter("lab", targets)
    assert isinstance(augment, LabJitter) and augment.n_images == len(targets)
    target_means = np.array([lab_mean_std(t)[0] for t in targets])
    source = cell_image(rng, 48, tint=(120, 140, 70))  # a greenish hospital, far from the target
    assert np.abs(lab_mean_std(source)[0] - target_means.mean(0)).max() > 10
    drawn = np.array([lab_mean_std(augment(source, rng))[0] for _ in range(200)])
    assert np.abs(drawn.mean(0) - target_means.mean(0)).max() < 3  # L*, a*, b* means land on the target's
    spread, target_spread = drawn.std(0), target_means.std(0)
    assert np.all((spread > 0.5 * target_spread) & (spread < 1.5 * target_spread + 0.5))
    params = augment.params()
    assert params["kind"] == "lab" and np.allclose(params["mean_mu"], target_means.mean(0))


def test_lab_fits_on_at_most_200_evenly_spaced_images(rng):
    assert evenly_spaced(list(range(10)), 20) == list(range(10))
    assert evenly_spaced(list(range(10)), 4) == [0, 3, 6, 9]
    small = [cell_image(rng, 8) for _ in range(230)]
    assert stain_augmenter("lab", small).n_images == 200


def test_factory_errors_are_one_line():
    for call, match in ((lambda: stain_augmenter("macenko"), "unknown stain augmentation 'macenko'; use one of"),
                        (lambda: stain_augmenter("hed", sigma=1.5), "must be in"),
                        (lambda: stain_augmenter("lab", []), "needs the target domain's training images")):
        with pytest.raises((StainshiftError, DataError), match=match) as err:
            call()
        assert "\n" not in str(err.value)
    assert AUGMENTS == ("hed", "lab")


# -- training ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    return simulated_project(tmp_path_factory.mktemp("stain_augment"), per_class=6, split=(0.5, 0.25, 0.25))


def _config(model: Path) -> dict:
    return json.loads((model.parent / "config.json").read_text())


def test_training_with_hed_jitter_records_it_and_changes_the_model(project):
    plain = train_classifier(project, ClassifierRequest("clinic", **FAST))
    hed = train_classifier(project, ClassifierRequest("clinic", stain_augment="hed", **FAST))
    assert plain.parent.name == "clinic-resnet18-group" and hed.parent.name == "clinic-resnet18-group-hed"
    assert _config(plain)["stain_augment"] is None and _config(plain)["stain_augment_params"] is None
    config = _config(hed)
    assert config["stain_augment"] == "hed" and config["stain_augment_params"] == {"kind": "hed", "sigma": 0.05}
    assert load_classifier(hed).config["stain_augment"] == "hed"
    a, b = load_classifier(plain).net.state_dict(), load_classifier(hed).net.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)  # same seed, so only the stain jitter makes them differ
    with pytest.raises(StainshiftError, match="drop --no-augment"):
        train_classifier(project, ClassifierRequest("clinic", stain_augment="hed", augment=False, **FAST))
    with pytest.raises(StainshiftError, match="unknown stain augmentation"):
        train_classifier(project, ClassifierRequest("clinic", stain_augment="rgb", **FAST))


def test_cli_trains_with_lab_statistics_of_the_training_domain(project, capsys):
    from stainshift.cli.main import main

    code = main(["classify", "train", "--domain", "clinic", "--stain-augment", "lab", "--size", "32", "--epochs",
                 "1", "--batch-size", "4", "--no-track", "-q", "--project", str(project.file)])
    assert code == 0, capsys.readouterr().err
    config = _config(project.runs / "classifiers" / "clinic-resnet18-group-lab" / "model.pt")
    params = config["stain_augment_params"]
    assert config["stain_augment"] == "lab" and params["kind"] == "lab"
    assert params["n_images"] == sum(config["images"]["train"].values())  # fitted on the train split only
    assert 0 < params["mean_mu"][0] < 100 and all(s > 0 for s in params["std_mu"])
