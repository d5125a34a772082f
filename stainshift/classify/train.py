"""Train and fine-tune the ResNet classifiers with fastai: one-cycle schedule, optional learning-rate finder.

    >>> path = train_classifier(project, ClassifierRequest("clinic", arch="resnet34", loss="focal", epochs=10))
    >>> tuned = finetune_classifier(project, path, "hgtp", epochs=5)     # the paper's second stage
    >>> reuse_check(path, request, project)       # None: that file is this request's model on the current split

Fitting uses the domain's saved **train** split, the epoch table (loss, accuracy, macro-F1) its **val** split; the
test split is left to :mod:`stainshift.classify.evaluate`. Images go through the same scale harmonization and centre
crop as every other step (:class:`~stainshift.data.datasets.CellDataset`), with flips and right-angle rotations
when ``augment`` (and first a stain augmentation, ``stain_augment`` "hed" or "lab": see
:mod:`stainshift.classify.stain_augment`). A run writes ``runs/classifiers/<name>/``: ``model.pt`` (see
:func:`~stainshift.classify.models.save_classifier`), ``config.json`` and ``history.csv`` (one row per epoch), and
mirrors params, per-epoch metrics (``step=epoch``) and those two files to mlflow (experiment ``classifiers``).

fastai does the loop: a :class:`fastai.learner.Learner` over plain torch ``DataLoader`` objects (so the weighted
sampler and the project's datasets stay as they are), ``fit_one_cycle`` and ``lr_find``. Its default Adam
(decoupled weight decay 0.01) and one-cycle defaults (25% warm-up, cosine annealing, momentum cycling) apply.
Training from scratch saves the model after the last epoch: with one-cycle the learning rate ends near zero, which is
the point. Fine-tuning (``keep="best"``, the default) saves the epoch with the best accuracy on the fine-tuning
domain's val split (fastai's ``SaveModelCallback``; the first such epoch on ties); config.json records
``keep``, ``monitor`` and ``selected_epoch``, and its ``final`` metrics are that epoch's.

config.json also records ``split_sha`` (hash of the domain's split CSV) and, for a fine-tune, ``base_sha`` (hash
of the base model file), so :func:`reuse_check` / :func:`finetune_reuse_check` can tell whether a saved model is
exactly what a request would train.
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

import numpy as np
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
from stainshift.classify.stain_augment import (
    AUGMENTS,
    LAB_FIT_IMAGES,
    HedJitter,
    LabJitter,
    evenly_spaced,
    stain_augmenter,
)
from stainshift.data.datasets import CellDataset, load_cell
from stainshift.data.domains import Sample
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.device import resolve_device
from stainshift.errors import DataError, StainshiftError
from stainshift.metrics import macro_f1 as macro_f1_score
from stainshift.project import Project
from stainshift.runs import MODEL_FILE, check_classifier_name, classifier_dir, split_file
from stainshift.train.checkpoints import file_hash

LOSSES = ("ce", "focal")
EXPERIMENT = "classifiers"
DEFAULT_LR = 1e-3
KEEPS = ("best", "last")
MONITOR = "accuracy"  # the fastai metric a fine-tune's kept epoch maximizes (history column valid_accuracy)


@dataclass(frozen=True)
class ClassifierRequest:
    """Everything that defines a classifier training run (the CLI's options, typed).

    ``lr=None`` means: the learning-rate finder's suggestion when ``lr_find``, else 1e-3. ``stain_augment``
    ("hed" or "lab") adds a stain augmentation to the flips (so it needs ``augment``).
    """

    domain: str
    arch: str = "resnet18"
    loss: str = "ce"
    norm: str = "group"
    size: int = 96
    epochs: int = 10
    lr: float | None = None
    lr_find: bool = False
    lr_find_iters: int = 100
    batch_size: int = 32
    balanced: bool = False
    augment: bool = True
    stain_augment: str | None = None
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
            (self.stain_augment in (None, *AUGMENTS),
             f"unknown stain augmentation '{self.stain_augment}'; use one of {', '.join(AUGMENTS)}"),
            (self.augment or self.stain_augment is None,
             "stain augmentation is part of augmentation: drop --no-augment or --stain-augment"),
        ]
        for ok, message in checks:
            if not ok:
                raise StainshiftError(message)
        if self.name is not None:
            check_classifier_name(self.name)

    @property
    def run_name(self) -> str:
        return self.name or default_name(self.domain, self.arch, self.loss, self.norm, self.stain_augment)


def default_name(domain: str, arch: str, loss: str = "ce", norm: str = "group", stain_augment: str | None = None
                 ) -> str:
    """``<domain>-<arch>[-focal][-<norm> unless batch][-hed|-lab]``, e.g. ``clinic-resnet34-focal-group-hed``."""
    return "-".join([domain, arch] + (["focal"] if loss == "focal" else []) + ([norm] if norm != "batch" else [])
                    + ([stain_augment] if stain_augment else []))


def finetuned_name(base: str, domain: str) -> str:
    """Default name of ``base`` fine-tuned on ``domain``."""
    return f"{base}-ft-{domain}"


def _import_fastai() -> None:
    """Import fastai with its own import-time deprecation warning muted (``fastai.layers`` decorates functions with
    ``torch.jit.script``): it is fastai's to fix, and what a user sees should be ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        import fastai.torch_basics  # noqa: F401


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (fastai's ``set_seed``, cuDNN deterministic)."""
    _import_fastai()
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
    augmenter: HedJitter | LabJitter | None = None  # the stain augmentation


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


def _data(project: Project, domain: str, classes: Sequence[str] | None, size: int, augment: bool,
          stain_augment: str | None = None) -> tuple[_Data, list[str]]:
    train, valid, classes, excluded = _split_samples(project, domain, classes)
    scale = scale_factor(project, domain)
    augmenter = None
    if augment and stain_augment:  # "lab" fits on (up to 200 of) the training crops it will augment
        fit_on = evenly_spaced(train, LAB_FIT_IMAGES) if stain_augment == "lab" else []
        augmenter = stain_augmenter(stain_augment, [load_cell(s, scale, size) for s in fit_on])
    return _Data(CellDataset(train, classes, size, scale, augment, augmenter),
                 CellDataset(valid, classes, size, scale), excluded, scale, augmenter), classes


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


def _best_keeper():
    """fastai's SaveModelCallback on validation accuracy (np.greater), silent, remembering the epoch it keeps."""
    from fastai.callback.tracker import SaveModelCallback, TrackerCallback

    class KeepBest(SaveModelCallback):
        best_epoch: int | None = None

        def after_epoch(self) -> None:
            TrackerCallback.after_epoch(self)  # updates best / new_best; the parent's print is left out
            if self.new_best:
                self.best_epoch = self.epoch + 1
                self._save(self.fname)

    return KeepBest(monitor=MONITOR, comp=np.greater, fname="best")


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


def split_sha(project: Project, domain: str) -> str | None:
    """Hash of the domain's saved split CSV (first 16 hex digits of its sha256), None when none is saved."""
    path = split_file(project, domain)
    return file_hash(path) if path.is_file() else None


def _fit(project: Project, request: ClassifierRequest, clf: Classifier, data: _Data, stage: dict[str, Any],
         keep: str = "last") -> Path:
    """The loop shared by training and fine-tuning; writes the run folder and returns the model path.

    ``keep``: save the last epoch, or the best one by validation accuracy."""
    _import_fastai()
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
        "lr_find_iters": r.lr_find_iters, "augment": r.augment, "stain_augment": r.stain_augment,
        "stain_augment_params": data.augmenter.params() if data.augmenter is not None else None,
        "seed": r.seed, "weights": str(r.weights) if r.weights else None, "keep": keep,
        "monitor": f"valid_{MONITOR}" if keep == "best" else None, "scale_factor": data.scale, "images": counts,
        "excluded_classes": data.excluded, "split_file": str(split_file(project, r.domain)),
        "split_sha": split_sha(project, r.domain), "versions": _versions(),
    }
    history: list[dict[str, Any]] = []
    seed_everything(r.seed)
    dls = _loaders(data, r.batch_size, r.balanced, r.seed, r.workers, device)
    tags = {"domain": r.domain, "stage": stage["stage"], "arch": clf.arch, "norm": clf.norm, "loss": r.loss}
    params = {k: v for k, v in config.items() if k not in ("versions", "classes", "images", "stain_augment_params")}
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
        callbacks = [_epoch_logger(history, mlflow)]
        keeper = _best_keeper() if keep == "best" else None
        if keeper is not None:  # it loads the best epoch's weights back after the last epoch
            callbacks.append(keeper)
        with _quiet(learn, r.progress):
            learn.fit_one_cycle(r.epochs, lr_max=lr, cbs=callbacks)
        clf = clf.cpu().eval()
        config["selected_epoch"] = selected = keeper.best_epoch if keeper is not None else len(history)
        kept = history[selected - 1]
        config["final"] = {"valid_accuracy": kept["valid_accuracy"], "valid_macro_f1": kept["valid_macro_f1"],
                           "valid_loss": kept["valid_loss"]}
        config["seconds"] = round(time.perf_counter() - started, 1)
        clf.config = {}
        save_classifier(clf, model_path, config)
        atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2))
        _write_history(out_dir / "history.csv", history)
        if mlflow is not None:
            mlflow.log_params({"lr_used": lr, "selected_epoch": selected})
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
    data, classes = _data(project, request.domain, None, request.size, request.augment, request.stain_augment)
    seed_everything(request.seed)  # parameter initialization
    clf = build_classifier(request.arch, len(classes), request.norm, request.weights, classes, request.size)
    stage = {"stage": "train", "domain": request.domain, "trained_on": [request.domain], "base_model": None}
    return _fit(project, request, clf, data, stage)


def _check_keep(keep: str) -> None:
    if keep not in KEEPS:
        raise StainshiftError(f"unknown keep '{keep}'; use one of {', '.join(KEEPS)} (--keep best|last)")


def finetune_classifier(project: Project, model_path: str | Path, domain: str, epochs: int = 5,
                        lr: float | None = None, *, lr_find: bool = False, loss: str | None = None,
                        batch_size: int = 32, balanced: bool = False, augment: bool = True, seed: int = 0,
                        keep: str = "best", name: str | None = None, overwrite: bool = False, device: str = "auto",
                        workers: int = 0, progress: bool = True, track: bool = True, lr_find_iters: int = 100
                        ) -> Path:
    """Continue training a saved classifier on ``domain``'s train split (one-cycle), the paper's second stage.

    Classes are matched by name: the model keeps its classes and head, images of the domain's other classes are
    left out (listed in config.json), and a domain sharing no class with the model is an error. ``loss`` defaults
    to the base model's. ``keep="best"`` saves the epoch with the best accuracy on ``domain``'s val split,
    ``"last"`` the last one. The default name is ``<base name>-ft-<domain>``.
    """
    _check_keep(keep)
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
             "base_model": str(model_path.resolve()), "base_sha": file_hash(model_path)}
    return _fit(project, request, clf, data, stage, keep)


# -- reuse --------------------------------------------------------------------------------------------------------
def _saved_config(model_path: Path) -> dict[str, Any] | None:
    config = Path(model_path).parent / "config.json"
    if not Path(model_path).is_file() or not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8"))


def _differences(config: dict[str, Any], wanted: dict[str, Any], project: Project, domain: str,
                 absent: dict[str, Any] | None = None) -> str | None:
    """``"key saved != wanted"`` for each option that differs, then the split; None when all match.

    ``absent`` gives the value a key means when an older config.json lacks it."""
    absent = absent or {}
    reasons = [f"{key} {config.get(key, absent.get(key))} != {value}" for key, value in wanted.items()
               if config.get(key, absent.get(key)) != value]
    current = split_sha(project, domain)
    if "split_sha" not in config:
        reasons.append("no record of split_sha")
    elif current is None:
        reasons.append(f"no saved split of '{domain}'")
    elif config["split_sha"] != current:
        reasons.append("split changed")
    return ", ".join(reasons) or None


def reuse_check(model_path: Path, request: ClassifierRequest, project: Project) -> str | None:
    """None when the classifier saved at ``model_path`` was trained by exactly ``request`` on the domain's current
    split, else a short reason (``"epochs 10 != 5"``: saved value first; ``"split changed"``; ...)."""
    r = request
    config = _saved_config(model_path)
    if config is None:
        return f"no classifier saved at {model_path}"
    wanted: dict[str, Any] = {
        "stage": "train", "domain": r.domain, "arch": r.arch, "loss": r.loss,
        "gamma": r.gamma if r.loss == "focal" else None, "norm": r.norm, "input_size": r.size, "epochs": r.epochs,
        "lr": r.lr, "lr_find": r.lr_find, "batch_size": r.batch_size, "balanced": r.balanced, "augment": r.augment,
        "stain_augment": r.stain_augment, "seed": r.seed, "weights": str(r.weights) if r.weights else None}
    if r.lr_find:
        wanted["lr_find_iters"] = r.lr_find_iters
    return _differences(config, wanted, project, r.domain)


def finetune_reuse_check(model_path: Path, base_model: Path, domain: str, *, epochs: int = 5,
                         lr: float | None = None, lr_find: bool = False, loss: str | None = None,
                         batch_size: int = 32, balanced: bool = False, augment: bool = True, seed: int = 0,
                         keep: str = "best", project: Project) -> str | None:
    """None when ``model_path`` is ``base_model`` (same file contents) fine-tuned on ``domain``'s current split with
    these options (those of :func:`finetune_classifier`), else a short reason (saved value first)."""
    _check_keep(keep)
    config = _saved_config(model_path)
    if config is None:
        return f"no classifier saved at {model_path}"
    if not Path(base_model).is_file():
        return f"no base model at {base_model}"
    if "base_sha" not in config:
        return "no record of base_sha"
    if config["base_sha"] != file_hash(base_model):
        return "base model changed"
    base_loss = torch.load(base_model, map_location="cpu", weights_only=True).get("config", {}).get("loss", "ce")
    wanted = {"stage": "finetune", "domain": domain, "epochs": epochs, "lr": lr, "lr_find": lr_find,
              "loss": loss or base_loss, "batch_size": batch_size, "balanced": balanced, "augment": augment,
              "seed": seed, "keep": keep}
    return _differences(config, wanted, project, domain, absent={"keep": "last"})  # older fine-tunes kept the last
