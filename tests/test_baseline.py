"""Baseline CNN: learns simulated cells above chance, deterministically, without touching global torch state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stainshift.classify.baseline import accuracy, per_class_accuracy, predict, train_baseline
from stainshift.data.simulate import render_cells
from stainshift.errors import StainshiftError

CLASSES = ("eosinophil", "basophil", "lymphocyte")


@pytest.fixture(scope="module")
def data():
    train = render_cells(12, ["clinic"], size=48, seed=0, classes=CLASSES)
    test = render_cells(8, ["clinic"], size=48, seed=0, classes=CLASSES, start=12)
    return train, test


def test_baseline_learns_above_chance_and_is_deterministic(data) -> None:
    train, test = data
    threads, rng_state = torch.get_num_threads(), torch.get_rng_state()
    kwargs = {"epochs": 6, "seed": 1, "batch_size": 8, "width": 8, "input_size": 32, "class_names": CLASSES}
    model = train_baseline(train.images["clinic"], train.labels, **kwargs)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert not model.training and model.class_names == CLASSES
    acc = accuracy(model, test.images["clinic"], test.labels)
    assert acc > 0.6  # chance is 1/3
    again = train_baseline(train.images["clinic"], torch.as_tensor(train.labels), **kwargs)
    assert np.array_equal(predict(model, test.images["clinic"]), predict(again, test.images["clinic"]))
    per_class = per_class_accuracy(predict(model, test.images["clinic"]), test.labels, 4)
    assert np.isnan(per_class[3]) and np.all(per_class[:3] >= 0)


def test_baseline_rejects_bad_input() -> None:
    with pytest.raises(StainshiftError, match="one label per image"):
        train_baseline(np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 0], epochs=1)
    with pytest.raises(StainshiftError, match=r"\(N, H, W, 3\)"):
        train_baseline(np.zeros((4, 32, 32), np.uint8), [0, 1, 0, 1], epochs=1)
    with pytest.raises(StainshiftError, match="epochs"):
        train_baseline(np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 0, 1], epochs=0)
