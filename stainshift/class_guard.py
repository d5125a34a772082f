"""The class guard of epoch selection: a translation must not change what class a cell looks like.

Two measures of one epoch's translations of the source's validation images, by the target-domain classifier:

- :func:`class_recalls` / :func:`worst_recall`: each class's recall and the lowest (classes with at least
  ``GUARD_MIN_IMAGES`` labelled images);
- :func:`histogram_drift`: the total-variation distance from the predicted-class histogram to the nearer of the
  reference histograms (the classes predicted after a structure-safe colour method; the target's class prior).

The thresholds and where they were calibrated are in :mod:`stainshift.rules`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stainshift.rules import GUARD_MIN_IMAGES


def histogram(predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """The share of each class index among ``predicted``."""
    counts = np.bincount(np.asarray(predicted, np.int64), minlength=n_classes).astype(float)
    return counts / max(counts.sum(), 1.0)


def histogram_drift(predicted: np.ndarray, references: Sequence[np.ndarray]) -> float:
    """Total variation (0: same shares, 1: disjoint) from ``predicted``'s histogram to the nearest reference."""
    hist = histogram(predicted, len(references[0]))
    return float(min(0.5 * np.abs(hist - np.asarray(ref, float)).sum() for ref in references))


def class_recalls(labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str],
                  min_images: int = GUARD_MIN_IMAGES) -> dict[str, float]:
    """Recall of each class with at least ``min_images`` labelled images (label index k = ``classes[k]``; -1 =
    unknown)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    return {name: float((predicted[labels == k] == k).mean()) for k, name in enumerate(classes)
            if (labels == k).sum() >= min_images}


def worst_recall(labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str],
                 min_images: int = GUARD_MIN_IMAGES) -> tuple[str, float] | None:
    """The class recalled least, with its recall; None when no class has ``min_images`` labelled images."""
    recalls = class_recalls(labels, predicted, classes, min_images)
    if not recalls:
        return None
    worst = min(recalls, key=lambda name: recalls[name])
    return worst, recalls[worst]
