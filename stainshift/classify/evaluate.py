"""Measure a classifier on a domain's split, raw or harmonized: accuracy, macro-F1, recall, confusion, bootstrap CIs.

    >>> clf = load_classifier("runs/classifiers/clinic-resnet18-group/model.pt")
    >>> raw = evaluate(clf, project, "hgtp")                                  # hgtp's test split as imaged
    >>> fixed = evaluate(clf, project, "hgtp", harmonized_root=Path("runs/hgtp_to_clinic/cyclegan/harmonized"))
    >>> print(fixed.summary()); write_report(fixed, Path("out"))

Images are prepared exactly as in training: the domain's scale factor to the project's common cell diameter, then a
centre crop (or reflect pad) to the classifier's input size. A harmonized folder mirrors the domain's tree, so the
same split keys are read from it instead (harmonize keeps each file's name and size).

Classes are matched by name. Images of classes the model does not know are left out and listed in ``excluded``; a
domain sharing no class with the model is an error. Macro-F1 averages F1 over the classes that have images in the
evaluated set; predicting a class without images only lowers the recall of the true class. The 95% intervals are
percentile bootstraps over images (``n_boot`` resamples, seeded: the same call gives the same interval).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stainshift.atomic import atomic_path, atomic_write_text
from stainshift.classify.models import Classifier, load_classifier
from stainshift.data.datasets import CellDataset, center_crop, center_crop_tensor, rescale, to_tensor
from stainshift.errors import DataError, StainshiftError
from stainshift.metrics import macro_f1_from_counts
from stainshift.project import Project

N_BOOT = 1000


@dataclass
class EvalReport:
    """What one evaluation measured. ``confusion[i, j]``: images of class ``classes[i]`` predicted ``classes[j]``
    (square over the model's classes). Recall and support cover the classes that have images."""

    classes: list[str]
    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    macro_f1: float
    macro_f1_ci: tuple[float, float]
    per_class_recall: dict[str, float]
    support: dict[str, int]
    confusion: np.ndarray
    excluded: dict[str, int] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    y_true: list[str] = field(default_factory=list)
    y_pred: list[str] = field(default_factory=list)
    model: str = ""
    domain: str | None = None
    split: str | None = None
    images: str = "raw"
    n_boot: int = N_BOOT
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Metrics as plain JSON values (no per-image lists)."""
        return {"model": self.model, "domain": self.domain, "split": self.split, "images": self.images,
                "n": self.n, "accuracy": self.accuracy, "accuracy_ci95": list(self.accuracy_ci),
                "macro_f1": self.macro_f1, "macro_f1_ci95": list(self.macro_f1_ci),
                "per_class_recall": self.per_class_recall, "support": self.support, "classes": self.classes,
                "confusion": self.confusion.tolist(), "excluded": self.excluded,
                "bootstrap": {"resamples": self.n_boot, "seed": self.seed, "method": "percentile"}}

    def summary(self) -> str:
        """A few human lines: accuracy and macro-F1 with CIs, recall per class, excluded classes."""
        where = " ".join(str(p) for p in (self.domain, self.split) if p) or "images"
        lines = [f"{self.model or 'classifier'} on {where} ({self.images}, {self.n} images): "
                 f"accuracy {self.accuracy:.3f} [95% CI {self.accuracy_ci[0]:.3f}-{self.accuracy_ci[1]:.3f}], "
                 f"macro-F1 {self.macro_f1:.3f} [{self.macro_f1_ci[0]:.3f}-{self.macro_f1_ci[1]:.3f}]",
                 "recall: " + ", ".join(f"{c} {r:.3f} (n={self.support[c]})"
                                        for c, r in self.per_class_recall.items())]
        if self.excluded:
            lines.append("excluded (classes the model lacks): "
                         + ", ".join(f"{c} ({n})" for c, n in sorted(self.excluded.items())))
        return "\n".join(lines)


# -- metrics ------------------------------------------------------------------------------------------------------
def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, n_boot: int = N_BOOT, seed: int = 0,
                 level: float = 0.95) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile bootstrap intervals (accuracy, macro-F1) from ``n_boot`` resamples of the images."""
    n = len(y_true)
    if n == 0 or n_boot < 1:
        return (float("nan"),) * 2, (float("nan"),) * 2  # type: ignore[return-value]
    rng = np.random.default_rng(seed)
    codes = y_true.astype(np.int64) * n_classes + y_pred.astype(np.int64)
    k2 = n_classes * n_classes
    accs, f1s = [], []
    chunk = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        accs.append((y_true[idx] == y_pred[idx]).mean(1))
        flat = codes[idx] + (np.arange(b)[:, None] * k2)
        conf = np.bincount(flat.ravel(), minlength=b * k2).reshape(b, n_classes, n_classes)
        f1s.append(macro_f1_from_counts(conf))
    tail = (1 - level) / 2 * 100
    acc_ci = np.percentile(np.concatenate(accs), [tail, 100 - tail])
    f1_ci = np.percentile(np.concatenate(f1s), [tail, 100 - tail])
    return (float(acc_ci[0]), float(acc_ci[1])), (float(f1_ci[0]), float(f1_ci[1]))


def report_from_predictions(classes: Sequence[str], y_true: Sequence[int], y_pred: Sequence[int],
                            keys: Sequence[str] | None = None, excluded: dict[str, int] | None = None,
                            n_boot: int = N_BOOT, seed: int = 0, **meta: Any) -> EvalReport:
    """An :class:`EvalReport` from class indices (into ``classes``) of the true and predicted labels."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    k = len(classes)
    if len(t) == 0:
        raise StainshiftError("no images to evaluate; check the domain, its split and the model's classes")
    conf = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    support = {c: int(conf[i].sum()) for i, c in enumerate(classes) if conf[i].sum() > 0}
    recall = {c: float(conf[i, i] / conf[i].sum()) for i, c in enumerate(classes) if conf[i].sum() > 0}
    acc_ci, f1_ci = bootstrap_ci(t, p, k, n_boot, seed)
    names = list(classes)
    return EvalReport(
        classes=names, n=len(t), accuracy=float((t == p).mean()), accuracy_ci=acc_ci,
        macro_f1=float(macro_f1_from_counts(conf)), macro_f1_ci=f1_ci, per_class_recall=recall, support=support,
        confusion=conf, excluded=dict(excluded or {}),
        keys=list(keys) if keys is not None else [str(i) for i in range(len(t))],
        y_true=[names[i] for i in t], y_pred=[names[i] for i in p], n_boot=n_boot, seed=seed, **meta,
    )


def _match_classes(model_classes: Sequence[str], labels: Sequence[str], what: str) -> dict[str, int]:
    """Labels the model lacks -> count; a one-line error when none overlaps."""
    known = set(model_classes)
    present = list(dict.fromkeys(labels))
    if not known & set(present):
        raise DataError(f"{what} has classes {present} but the model knows {list(model_classes)}: no class in "
                        "common; evaluate a model trained on the same class folder names")
    return dict(Counter(label for label in labels if label not in known))


def _as_classifier(classifier: Classifier | str | Path) -> Classifier:
    return classifier if isinstance(classifier, Classifier) else load_classifier(classifier)


def _model_name(clf: Classifier, given: Classifier | str | Path) -> str:
    return str(clf.config.get("name") or (Path(given).parent.name if not isinstance(given, Classifier) else ""))


@torch.no_grad()
def _predict(clf: Classifier, batches) -> np.ndarray:
    was_training = clf.training
    clf.eval()
    device = clf.mean.device
    try:
        out = [clf(x.to(device)).argmax(1).cpu() for x in batches]
    finally:
        clf.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


# -- a domain's split ---------------------------------------------------------------------------------------------
def evaluate(classifier: Classifier | str | Path, project: Project, domain: str, split: str | None = "test",
             harmonized_root: Path | None = None, *, batch_size: int = 64, n_boot: int = N_BOOT, seed: int = 0,
             workers: int = 0, progress: bool = False) -> EvalReport:
    """Evaluate on ``split`` of ``domain`` (None: every image), or on the same keys read from ``harmonized_root``."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from stainshift.data.scale import scale_factor
    from stainshift.data.splits import samples_in

    clf = _as_classifier(classifier)
    samples = samples_in(project, domain, split)
    excluded = _match_classes(clf.classes, [s.label for s in samples], f"domain '{domain}'")
    samples = [s for s in samples if s.label in set(clf.classes)]
    images = "raw"
    if harmonized_root is not None:
        root = Path(harmonized_root)
        samples = [replace(s, path=root / s.key, mask=None) for s in samples]
        missing = [s.key for s in samples if not s.path.is_file()]
        if missing:
            raise DataError(f"{root}: {len(missing)} of {len(samples)} images of {domain} ({split or 'all'}) are "
                            f"missing, e.g. {missing[0]}; harmonize the domain into that folder first "
                            f"(`stainshift harmonize --src {domain} ...`)")
        images = str(root)
    dataset = CellDataset(samples, clf.classes, clf.input_size, scale_factor(project, domain))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    bar = tqdm(loader, desc=f"evaluate {domain}", unit="batch", disable=not progress, leave=False)
    predicted = _predict(clf, (x for x, _ in bar))
    truth = [clf.classes.index(s.label) for s in samples]
    return report_from_predictions(clf.classes, truth, predicted, [s.key for s in samples], excluded, n_boot, seed,
                                   model=_model_name(clf, classifier), domain=domain, split=split, images=images)


# -- arrays in memory -----------------------------------------------------------------------------------------------
def prepare_images(images: np.ndarray | torch.Tensor | Sequence[np.ndarray], size: int, scale: float = 1.0
                   ) -> torch.Tensor:
    """uint8 NHWC (array, tensor or list of HxWx3 arrays of any sizes) or float BCHW in [0, 1] -> float BCHW
    ``size`` square: rescaled by ``scale`` then centre-cropped, as the training datasets do."""
    if isinstance(images, list | tuple):
        if not all(isinstance(i, np.ndarray) and i.ndim == 3 and i.shape[-1] == 3 for i in images):
            raise StainshiftError("images: a list must hold HxWx3 uint8 arrays")
        return torch.stack([to_tensor(center_crop(rescale(np.asarray(i, np.uint8), scale), size)) for i in images]
                           ) if images else torch.zeros(0, 3, size, size)
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    if x.ndim == 4 and x.dtype == torch.uint8 and x.shape[-1] == 3:
        return prepare_images(list(x.cpu().numpy()), size, scale)
    if x.ndim == 4 and x.is_floating_point() and x.shape[1] == 3:
        x = x.float()
        if abs(scale - 1.0) >= 1e-3:
            h, w = x.shape[-2:]
            x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
                              antialias=scale < 1, align_corners=False)
        return center_crop_tensor(x, size)
    raise StainshiftError(f"images: expected uint8 (N, H, W, 3) or float (B, 3, H, W) in [0, 1], got "
                          f"{tuple(x.shape)} {x.dtype}")


def evaluate_arrays(classifier: Classifier | str | Path, images: np.ndarray | torch.Tensor | Sequence[np.ndarray],
                    labels: Sequence[str], *, keys: Sequence[str] | None = None, scale: float = 1.0,
                    batch_size: int = 64, n_boot: int = N_BOOT, seed: int = 0, **meta: Any) -> EvalReport:
    """Evaluate images held in memory (e.g. translated crops during epoch selection); ``labels`` are class names.

    Images go through :func:`prepare_images` (``scale`` then a centre crop to the model's input size).
    ``meta`` (domain, split, images, model) is copied into the report.
    """
    clf = _as_classifier(classifier)
    labels = [str(label) for label in labels]
    if len(labels) != len(images):
        raise StainshiftError(f"evaluate_arrays: {len(images)} images but {len(labels)} labels; pass one per image")
    keys = list(keys) if keys is not None else [str(i) for i in range(len(labels))]
    excluded = _match_classes(clf.classes, labels, "the labels")
    keep = [i for i, label in enumerate(labels) if label in set(clf.classes)]
    if isinstance(images, list | tuple):
        chosen: Any = [images[i] for i in keep]
    else:
        chosen = images[keep] if len(keep) < len(labels) else images
    x = prepare_images(chosen, clf.input_size, scale)
    predicted = _predict(clf, (x[i:i + batch_size] for i in range(0, len(x), batch_size)))
    truth = [clf.classes.index(labels[i]) for i in keep]
    meta.setdefault("model", _model_name(clf, classifier))
    meta.setdefault("images", "arrays")
    return report_from_predictions(clf.classes, truth, predicted, [keys[i] for i in keep], excluded, n_boot, seed,
                                   **meta)


# -- files ----------------------------------------------------------------------------------------------------------
def _plot_confusion(report: EvalReport, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conf = report.confusion.astype(float)
    rows = conf.sum(1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    k = len(report.classes)
    side = max(3.5, 0.8 * k + 2.0)
    fig = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    for i in range(k):
        for j in range(k):
            if rows[i, 0] > 0:
                ax.text(j, i, f"{norm[i, j]:.2f}\n({int(conf[i, j])})", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), report.classes, rotation=45, ha="right")
    ax.set_yticks(range(k), report.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    where = " ".join(str(p) for p in (report.domain, report.split) if p)
    ax.set_title(f"{report.model} {where}\naccuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)


def _csv(rows) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write_report(report: EvalReport, out_dir: str | Path) -> dict[str, Path]:
    """Write metrics.json, confusion.csv (counts), confusion.png (row-normalized) and predictions.csv."""
    out = Path(out_dir)
    paths = {name: out / name for name in ("metrics.json", "confusion.csv", "confusion.png", "predictions.csv")}
    atomic_write_text(paths["metrics.json"], json.dumps(report.to_dict(), indent=2))

    table = [["true\\predicted", *report.classes]]
    table += [[c, *map(int, report.confusion[i])] for i, c in enumerate(report.classes)]
    atomic_write_text(paths["confusion.csv"], _csv(table))
    rows = zip(report.keys, report.y_true, report.y_pred, strict=True)
    atomic_write_text(paths["predictions.csv"], _csv([["key", "true", "predicted"], *rows]))
    _plot_confusion(report, paths["confusion.png"])
    return paths
