"""How many labels a new hospital needs: the target classifier fine-tuned on k labelled source images, per condition.

For each condition (the original images, a harmonized folder, or a stain-augmented classifier on the original
images), each k of ``shots`` and each of ``draws`` seeded random draws of k images from the source's train split:
the condition's classifier is copied and fine-tuned in memory on those k images as the condition shows them (AdamW,
learning rate ``lr``, batches of up to 16 with flips and right-angle turns, ``epochs`` passes over the k images and
at least ``MIN_STEPS`` steps), then scored on the source's whole test split under the same condition. k = 0 is the
classifier as it is. The same draw of images serves every condition, so conditions are compared on the same labels.

Anchor: Chossegros et al. 2024 (J Pathol Inform) reached > 80% on 8 target datasets with a colour transform plus at
most 100 labelled images per site.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from stainshift.classify.evaluate import prepare_images
from stainshift.data.domains import Sample
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.errors import StainshiftError
from stainshift.grids import harmonized_row
from stainshift.project import Project

MIN_STEPS = 10
BATCH = 16


@dataclass(frozen=True)
class ShotCondition:
    """A set of images and the classifier that sees them (``folder`` None: the original images)."""

    label: str
    classifier: Path
    folder: Path | None = None


def check_shots(project: Project, src: str, shots: Sequence[int], classes: Sequence[str]) -> None:
    """Fail before any work when the source's train split cannot supply the largest k."""
    n = sum(s.label in set(classes) for s in samples_in(project, src, "train"))
    too_many = [k for k in shots if k > n]
    if too_many:
        fits = ",".join(str(k) for k in shots if k <= n) or "0"
        raise StainshiftError(f"--shots {','.join(map(str, too_many))}: '{src}' has only {n} train images of the "
                              f"classes {', '.join(classes)}; use at most {n} (e.g. --shots {fits})")


def draw(samples: Sequence[Sample], k: int, seed: int, index: int) -> list[Sample]:
    """Draw ``index`` of k samples (seeded by (seed, k, index); the same for every condition)."""
    if k > len(samples):
        raise StainshiftError(f"--shots {k}: the source's train split has only {len(samples)} images of the "
                              "classifier's classes; use smaller shots")
    order = np.random.default_rng([seed, k, index]).permutation(len(samples))[:k]
    return [samples[i] for i in sorted(order)]


def finetune_copy(classifier: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 5,
                  lr: float = 1e-4, seed: int = 0) -> torch.nn.Module:
    """A fine-tuned copy of ``classifier`` (the original is untouched) on images ``x`` (B x 3 x S x S) and labels."""
    model = copy.deepcopy(classifier).train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    batch = min(BATCH, len(x))
    steps = max(MIN_STEPS, math.ceil(epochs * len(x) / batch))
    for _ in range(steps):
        idx = torch.randperm(len(x), generator=generator)[:batch]
        xb = torch.rot90(x[idx], int(torch.randint(4, (), generator=generator)), dims=(2, 3))
        if torch.rand((), generator=generator) < 0.5:
            xb = xb.flip(3)
        loss = F.cross_entropy(model(xb), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.inference_mode()
def _correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    predicted = torch.cat([model(x[i:i + 64]).argmax(1) for i in range(0, len(x), 64)])
    return (predicted == y).numpy()


def label_curve(project: Project, src: str, conditions: Sequence[ShotCondition], shots: Sequence[int],
                draws: int = 3, seed: int = 0, epochs: int = 5, lr: float = 1e-4, progress: bool = False
                ) -> tuple[list[dict], dict[tuple[str, int], np.ndarray]]:
    """Rows (condition, k, draw, accuracy) and the per-test-image correctness, (draws, n) per (condition, k)."""
    from stainshift.classify.models import load_classifier

    scale = scale_factor(project, src)
    rows, correct = [], {}
    todo = [(c, k) for c in conditions for k in shots]
    for condition, k in tqdm(todo, desc=f"label curve {src}", unit="point", disable=not progress):
        clf = load_classifier(condition.classifier)
        classes = list(clf.classes)
        train = [s for s in samples_in(project, src, "train") if s.label in classes]
        test = [s for s in samples_in(project, src, "test") if s.label in classes]
        x_test = prepare_images(harmonized_row(test, condition.folder), clf.input_size, scale)
        y_test = torch.tensor([classes.index(s.label) for s in test])
        runs = []
        for d in range(draws if k > 0 else 1):
            if k == 0:
                model = clf
            else:
                picked = draw(train, k, seed, d)
                x = prepare_images(harmonized_row(picked, condition.folder), clf.input_size, scale)
                y = torch.tensor([classes.index(s.label) for s in picked])
                model = finetune_copy(clf, x, y, epochs=epochs, lr=lr, seed=seed * 1000 + d)
            runs.append(_correct(model, x_test, y_test))
            rows.append({"condition": condition.label, "k": k, "draw": d, "accuracy": float(runs[-1].mean()),
                         "n": len(test)})
        correct[(condition.label, k)] = np.stack(runs)
    return rows, correct
