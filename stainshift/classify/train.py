"""Train and fine-tune the ResNet classifiers with fastai: one-cycle schedule, optional learning-rate finder.

    >>> path = train_classifier(project, ClassifierRequest("clinic", arch="resnet34", loss="focal", epochs=10))
    >>> tuned = finetune_classifier(project, path, "hgtp", epochs=5)     # the paper's second stage

Fitting uses the domain's saved **train** split, the epoch table (loss, accuracy, macro-F1) its **val** split; the
test split is left to :mod:`stainshift.classify.evaluate`. Images go through the same scale harmonization and centre
crop as every other step (:class:`~stainshift.data.datasets.CellDataset`), with flips and right-angle rotations
when ``augment``. A run writes ``runs/classifiers/<name>/``: ``model.pt`` (see
:func:`~stainshift.classify.models.save_classifier`), ``config.json`` and ``history.csv`` (one row per epoch), and
mirrors params, per-epoch metrics (``step=epoch``) and those two files to mlflow (experiment ``classifiers``).

fastai does the loop: a :class:`fastai.learner.Learner` over plain torch ``DataLoader`` objects (so the weighted
sampler and the project's datasets stay as they are), ``fit_one_cycle`` and ``lr_find``. Its default Adam
(decoupled weight decay 0.01) and one-cycle defaults (25% warm-up, cosine annealing, momentum cycling) apply.
The model saved is the one after the last epoch: with one-cycle the learning rate ends near zero, which is the point.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stainshift.atomic import atomic_write_text
from stainshift.classify.models import (
    ARCHS,
    NORMS,
    Classifier,
    build_classifier,
    load_classifier,
    save_classifier,
)
from stainshift.data.datasets import CellDataset
from stainshift.data.domains import Sample
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.device import resolve_device
from stainshift.errors import DataError, StainshiftError
from stainshift.metrics import macro_f1 as macro_f1_score
from stainshift.project import Project
from stainshift.runs import MODEL_FILE, check_classifier_name, classifier_dir, split_file

LOSSES = ("ce", "focal")
EXPERIMENT = "classifiers"
DEFAULT_LR = 1e-3


@dataclass(frozen=True)
class ClassifierRequest:
    """Everything that defines a classifier training run (the CLI's options, typed).

    ``lr=None`` means: the learning-rate finder's suggestion when ``lr_find``, else 1e-3.
    """

    domain: str
    arch: str = "resnet18"
    loss: str = "ce"
    norm: str = "batch"
    size: int = 96
    epochs: int = 10
    lr: float | None = None
    lr_find: bool = False
    lr_find_iters: int = 100
    batch_size: int = 32
    balanced: bool = False
    augment: bool = True
    gamma: float = 2.0
    seed: int = 0
    weights: Path | None = None
    name: str | None = None
    overwrite: bool = False
    device: str = "auto"
    workers: int = 0
    progress: bool = True
    track: bool = True

    def validate(self) -> None:
        checks = [
            (self.arch in ARCHS, f"unknown architecture '{self.arch}'; use one of {', '.join(ARCHS)}"),
            (self.loss in LOSSES, f"unknown loss '{self.loss}'; use one of {', '.join(LOSSES)}"),
            (self.norm in NORMS, f"unknown norm '{self.norm}'; use one of {', '.join(NORMS)}"),
            (self.size >= 32, f"input size {self.size} px is too small for a ResNet; use 32 or more (default 96)"),
            (self.epochs >= 1, f"epochs={self.epochs}: train for at least one epoch"),
            (self.batch_size >= 2, f"batch size {self.batch_size}: use 2 or more (BatchNorm needs two images)"),
            (self.lr is None or (math.isfinite(self.lr) and self.lr > 0), f"learning rate {self.lr} must be > 0"),
            (self.lr is None or not self.lr_find, "pass either a learning rate or lr_find (--lr-find), not both"),
            (self.gamma >= 0, f"focal gamma {self.gamma} must be >= 0"),
            (self.lr_find_iters >= 12, f"lr_find_iters={self.lr_find_iters}: use 12 or more (fastai drops 5 per end)"),
        ]
        for ok, message in checks:
            if not ok:
                raise StainshiftError(message)
        if self.name is not None:
            check_classifier_name(self.name)

    @property
    def run_name(self) -> str:
        return self.name or default_name(self.domain, self.arch, self.loss, self.norm)


def default_name(domain: str, arch: str, loss: str = "ce", norm: str = "batch") -> str:
    """``<domain>-<arch>[-focal][-<norm>]``, e.g. ``clinic-resnet34-focal-group``."""
    return "-".join([domain, arch] + (["focal"] if loss == "focal" else []) + ([norm] if norm != "batch" else []))


def finetuned_name(base: str, domain: str) -> str:
    """Default name of ``base`` fine-tuned on ``domain``."""
    return f"{base}-ft-{domain}"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (fastai's ``set_seed``, cuDNN deterministic)."""
    from fastai.torch_core import set_seed

    set_seed(seed, reproducible=True)


def build_loss(loss: str, gamma: float = 2.0) -> nn.Module:
    from stainshift.losses import FocalLoss

    return FocalLoss(gamma=gamma) if loss == "focal" else nn.CrossEntropyLoss()


# -- data -------------------------------------------------------------------------------------------------------
@dataclass
class _Data:
    train: CellDataset
    valid: CellDataset
    excluded: dict[str, int]
    scale: float


def _split_samples(project: Project, domain: str, classes: Sequence[str] | None
                   ) -> tuple[list[Sample], list[Sample], list[str], dict[str, int]]:
    train, valid = samples_in(project, domain, "train"), samples_in(project, domain, "val")
    present = list(dict.fromkeys(s.label for s in train))
    if classes is None:
        classes = present
    keep = set(classes)
    excluded = dict(Counter(s.label for s in train + valid if s.label not in keep))
    if not keep & set(present):
        raise DataError(f"domain '{domain}' (classes {present}) shares no class with the model (classes "
                        f"{list(classes)}); fine-tune on a domain with the same class folder names")
    train = [s for s in train if s.label in keep]
    valid = [s for s in valid if s.label in keep]
    if len(train) < 2:
        raise DataError(f"domain '{domain}': {len(train)} training image(s) in its split; a classifier needs at "
                        "least 2 (add images or give train a larger fraction in stainshift.toml)")
    if not valid:
        raise DataError(f"domain '{domain}': its validation split is empty (classes with < 3 images have none); "
                        "add images or set split = [0.6, 0.2, 0.2] for the domain in stainshift.toml")
    return train, valid, list(classes), excluded


def _data(project: Project, domain: str, classes: Sequence[str] | None, size: int, augment: bool
          ) -> tuple[_Data, list[str]]:
    train, valid, classes, excluded = _split_samples(project, domain, classes)
    scale = scale_factor(project, domain)
    return _Data(CellDataset(train, classes, size, scale, augment), CellDataset(valid, classes, size, scale),
                 excluded, scale), classes


def _loaders(data: _Data, batch_size: int, balanced: bool, seed: int, workers: int, device: torch.device):
    from fastai.data.core import DataLoaders
    from torch.utils.data import DataLoader, WeightedRandomSampler

    n = len(data.train)
    bs = min(batch_size, n)
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if balanced:
        counts = Counter(s.label for s in data.train.samples)
        weights = [1.0 / counts[s.label] for s in data.train.samples]
        sampler = WeightedRandomSampler(weights, num_samples=n, replacement=True, generator=generator)
    pin = device.type == "cuda"
    train = DataLoader(data.train, batch_size=bs, shuffle=sampler is None, sampler=sampler, generator=generator,
                       drop_last=n % bs == 1, num_workers=workers, pin_memory=pin,  # no batch of one for BatchNorm
                       persistent_workers=workers > 0)
    valid = DataLoader(data.valid, batch_size=max(2 * bs, 64), shuffle=False, num_workers=workers, pin_memory=pin)
    dls = DataLoaders(train, valid)
    dls._device = device  # plain torch loaders have no .to(): fastai moves each batch to this device itself
    return dls


# -- fastai -----------------------------------------------------------------------------------------------------
def _epoch_logger(history: list[dict[str, Any]], mlflow: Any):
    """A fastai callback appending each epoch's row to ``history`` (and to mlflow, ``step=epoch``)."""
    from fastai.callback.core import Callback
    from fastai.learner import Recorder

    class EpochLog(Callback):
        order = Recorder.order + 1  # after the Recorder has stored the epoch's values

        def before_epoch(self) -> None:
            self.start = time.perf_counter()

        def after_epoch(self) -> None:
            train_loss, valid_loss, acc, f1 = (float(v) if v is not None else float("nan")
                                               for v in self.recorder.values[-1])
            row = {"epoch": self.epoch + 1, "train_loss": train_loss, "valid_loss": valid_loss,
                   "valid_accuracy": acc, "valid_macro_f1": f1, "lr": float(self.opt.hypers[-1]["lr"]),
                   "seconds": round(time.perf_counter() - self.start, 3)}
            history.append(row)
            if mlflow is not None:
                mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch" and math.isfinite(v)},
                                   step=row["epoch"])

    return EpochLog()


def _metrics():
    from fastai.metrics import AccumMetric, accuracy

    return [accuracy, AccumMetric(macro_f1_score, dim_argmax=-1, to_np=True, invert_arg=True, name="macro_f1")]


@contextlib.contextmanager
def _quiet(learn: Any, progress: bool) -> Iterator[None]:
    if progress:
        yield
        return
    with learn.no_bar(), learn.no_logging():
        yield


def _find_lr(learn: Any, iters: int, progress: bool) -> float | None:
    """fastai's learning-rate finder (model and optimizer restored afterwards); ``valley`` suggestion."""
    with _quiet(learn, progress), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            found = learn.lr_find(num_it=iters, show_plot=False)
        except (IndexError, ValueError, RuntimeError):  # too few points for a suggestion (the model is restored)
            found = None
    lr = float(found.valley) if found is not None else float("nan")
    if not math.isfinite(lr) or lr <= 0:
        warnings.warn(f"the learning-rate finder gave no usable suggestion; using {DEFAULT_LR}", stacklevel=3)
        return None
    return lr


def _versions() -> dict[str, str]:
    import fastai
    import timm

    from stainshift import __version__

    return {"stainshift": __version__, "torch": str(torch.__version__), "timm": timm.__version__,
            "fastai": fastai.__version__}


def _fit(project: Project, request: ClassifierRequest, clf: Classifier, data: _Data, stage: dict[str, Any]) -> Path:
    """The loop shared by training and fine-tuning; writes the run folder and returns the model path."""
    # importing these patches Learner.no_bar / no_logging, Learner.fit_one_cycle and Learner.lr_find
    import fastai.callback.progress
    import fastai.callback.schedule  # noqa: F401
    from fastai.learner import Learner

    from stainshift.tracking import tracked_run

    r = request
    out_dir = classifier_dir(project, r.run_name)
    model_path = out_dir / MODEL_FILE
    if model_path.exists() and not r.overwrite:
        raise StainshiftError(f"{model_path} exists; choose another --name or pass --overwrite to replace it")
    device = resolve_device(r.device)
    counts = {"train": dict(Counter(s.label for s in data.train.samples)),
              "val": dict(Counter(s.label for s in data.valid.samples))}
    config: dict[str, Any] = {
        "name": r.run_name, **stage, "arch": clf.arch, "norm": clf.norm, "loss": r.loss,
        "gamma": r.gamma if r.loss == "focal" else None, "input_size": clf.input_size, "classes": clf.classes,
        "epochs": r.epochs, "lr": r.lr, "lr_find": r.lr_find, "batch_size": r.batch_size, "balanced": r.balanced,
        "augment": r.augment, "seed": r.seed, "weights": str(r.weights) if r.weights else None,
        "scale_factor": data.scale, "images": counts, "excluded_classes": data.excluded,
        "split_file": str(split_file(project, r.domain)), "versions": _versions(),
    }
    history: list[dict[str, Any]] = []
    seed_everything(r.seed)
    dls = _loaders(data, r.batch_size, r.balanced, r.seed, r.workers, device)
    tags = {"domain": r.domain, "stage": stage["stage"], "arch": clf.arch, "norm": clf.norm, "loss": r.loss}
    params = {k: v for k, v in config.items() if k not in ("versions", "classes", "images")}
    tracking = tracked_run(project, EXPERIMENT, r.run_name, params, tags) if r.track else contextlib.nullcontext()
    started = time.perf_counter()
    with tracking as mlflow, tempfile.TemporaryDirectory(prefix="stainshift-fastai-") as scratch:
        learn = Learner(dls, clf, loss_func=build_loss(r.loss, r.gamma), metrics=_metrics(), path=scratch,
                        model_dir=".")
        lr = r.lr
        if r.lr_find:
            config["lr_found"] = lr = _find_lr(learn, r.lr_find_iters, r.progress)
            seed_everything(r.seed)  # the finder consumed random numbers: training starts from the same state
            dls.train.generator.manual_seed(r.seed)
        config["lr_used"] = lr = lr or DEFAULT_LR
        with _quiet(learn, r.progress):
            learn.fit_one_cycle(r.epochs, lr_max=lr, cbs=[_epoch_logger(history, mlflow)])
        clf = clf.cpu().eval()
        last = history[-1]
        config["final"] = {"valid_accuracy": last["valid_accuracy"], "valid_macro_f1": last["valid_macro_f1"],
                           "valid_loss": last["valid_loss"]}
        config["seconds"] = round(time.perf_counter() - started, 1)
        clf.config = {}
        save_classifier(clf, model_path, config)
        atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2))
        _write_history(out_dir / "history.csv", history)
        if mlflow is not None:
            mlflow.log_params({"lr_used": lr})
            mlflow.set_tag("classifier_path", str(model_path))
            for name in ("config.json", "history.csv"):
                mlflow.log_artifact(str(out_dir / name))
    return model_path


def _write_history(path: Path, history: Sequence[dict[str, Any]]) -> None:
    columns = list(history[0]) if history else ["epoch"]
    lines = [",".join(columns)] + [",".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                                            for c in columns) for row in history]
    atomic_write_text(path, "\n".join(lines) + "\n")


# -- public entry points ------------------------------------------------------------------------------------------
def train_classifier(project: Project, request: ClassifierRequest) -> Path:
    """Train a classifier from scratch (or from ``request.weights``) on ``request.domain``; returns its model.pt."""
    request.validate()
    project.domain(request.domain)
    data, classes = _data(project, request.domain, None, request.size, request.augment)
    seed_everything(request.seed)  # parameter initialization
    clf = build_classifier(request.arch, len(classes), request.norm, request.weights, classes, request.size)
    stage = {"stage": "train", "domain": request.domain, "trained_on": [request.domain], "base_model": None}
    return _fit(project, request, clf, data, stage)


def finetune_classifier(project: Project, model_path: str | Path, domain: str, epochs: int = 5,
                        lr: float | None = None, *, lr_find: bool = False, loss: str | None = None,
                        batch_size: int = 32, balanced: bool = False, augment: bool = True, seed: int = 0,
                        name: str | None = None, overwrite: bool = False, device: str = "auto", workers: int = 0,
                        progress: bool = True, track: bool = True, lr_find_iters: int = 100) -> Path:
    """Continue training a saved classifier on ``domain``'s train split (one-cycle), the paper's second stage.

    Classes are matched by name: the model keeps its classes and head, images of the domain's other classes are
    left out (listed in config.json), and a domain sharing no class with the model is an error. ``loss`` defaults
    to the base model's. The default name is ``<base name>-ft-<domain>``.
    """
    model_path = Path(model_path)
    clf = load_classifier(model_path)
    base = clf.config
    loss = loss or base.get("loss", "ce")
    request = ClassifierRequest(
        domain=domain, arch=clf.arch, loss=loss, norm=clf.norm, size=clf.input_size, epochs=epochs, lr=lr,
        lr_find=lr_find, lr_find_iters=lr_find_iters, batch_size=batch_size, balanced=balanced, augment=augment,
        gamma=float(base.get("gamma") or 2.0), seed=seed, weights=None,
        name=name or finetuned_name(base.get("name") or model_path.parent.name, domain), overwrite=overwrite,
        device=device, workers=workers, progress=progress, track=track,
    )
    request.validate()
    project.domain(domain)
    data, _ = _data(project, domain, clf.classes, clf.input_size, augment)
    if data.excluded:
        listed = ", ".join(f"{c} ({n})" for c, n in sorted(data.excluded.items()))
        warnings.warn(f"fine-tuning on '{domain}' leaves out images of classes the model lacks: {listed}",
                      stacklevel=2)
    clf.train()
    before = base.get("trained_on") or ([base["domain"]] if base.get("domain") else [])
    stage = {"stage": "finetune", "domain": domain, "trained_on": [*before, domain],
             "base_model": str(model_path.resolve())}
    return _fit(project, request, clf, data, stage)
