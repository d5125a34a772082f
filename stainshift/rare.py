"""Rare-class images: a between-class model (``classcyclegan``) turns images of a common class of one domain into
images of a rare one (the core paper's third block: normal lymphocytes <-> abnormal lymphocytes and blasts).

    pair = ClassPair("pbc", "lymphocyte", "erythroblast")
    train(project, rare_request(pair, preset="cpu"))               # stainshift.train, exact resume, kept epochs
    selection = select_epoch(project, pair)                        # scores every kept epoch, writes selected.json
    manifest = generate(project, pair, n=500, out="gen")           # gen/erythroblast/*.png + gen/manifest.json

Runs live under ``runs/<domain>.<from>_to_<domain>.<to>/<method>/<run_id>/`` (:func:`stainshift.runs.class_view`).

**Scoring a kept epoch** (``select_epoch``): the "from" class's validation images are translated as training saw
them (its scale, crop and load size) and measured by :mod:`stainshift.morphology` (one threshold segmentation
for every image). What must not change, per image against its own input: the cell's size (``size_change``,
median of |d_out / d_in - 1|) and outline (``outline_iou``, median IoU of the two cells). What must change, per
feature of :data:`stainshift.morphology.MOVED` (nucleus-to-cytoplasm ratio, nucleus texture, nucleus and cytoplasm
colour): ``moved_<feature>`` = (mean output - mean input) / (mean "to" - mean input), 0 where the input was and 1
at the real "to" class's mean (its train images), and their summary ``target_gap``: the distance of the outputs'
mean features from the "to" class's, over the inputs' distance (features in units of the real images' spread;
1 = unchanged, 0 = on the target class). With a classifier of the domain's classes, ``p_target`` is its mean
probability of the "to" class on the outputs and ``to_rate`` the fraction it calls "to".

**The rule**: among epochs that keep the cell (found in at least ``FOUND_MIN`` of the outputs as often as in the
inputs, ``outline_iou >= IOU_MIN``, ``size_change <= SIZE_CHANGE_MAX``), the highest ``p_target`` with a
classifier (ties: the lower ``target_gap``), else the lowest ``target_gap``; when no epoch keeps the cell, the one
with the best outline, flagged as a fallback. Only train and validation images are read. The gates were set a
priori (a cell whose outline or size moves more than this is another cell), not tuned on any split.

Why one threshold segmentation and not the domain's masks: generated images have no masks, and measuring inputs by
their masks and outputs by thresholds would report the two segmenters' disagreement as a change of the cell.
Where the domain has masks, ``selected.json`` records how well the thresholds agree with them on the inputs
(``mask_dice_cell`` / ``mask_dice_nucleus``), so a reader knows how far to trust the measures.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from stainshift import runs
from stainshift.atomic import atomic_write_text, save_figure
from stainshift.data.datasets import rescale, to_tensor, to_uint8, training_factor
from stainshift.data.domains import Sample, read_sample
from stainshift.data.io import write_image
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.errors import StainshiftError
from stainshift.models.registry import entry, load_epoch
from stainshift.morphology import FEATURES, MOVED, mask_agreement, measure_all, outline_iou
from stainshift.project import Project
from stainshift.train.batches import class_pair_samples

if TYPE_CHECKING:
    from stainshift.classify.models import Classifier
    from stainshift.train.loop import TrainRequest

DEFAULT_METHOD = "classcyclegan"
IOU_MIN = 0.75          # a kept outline: the output's cell covers >= 3/4 of the union with the input's
SIZE_CHANGE_MAX = 0.15  # a kept size: equivalent diameter within 15% of the input's
FOUND_MIN = 0.8         # a kept cell at all: found in >= 80% of the outputs where it was found in the inputs
MANIFEST = "manifest.json"
KIND = "stainshift-rare-generation"


@dataclass(frozen=True)
class ClassPair:
    """Two classes of one domain: ``source`` images are turned into ``target`` ones."""

    domain: str
    source: str
    target: str

    @property
    def views(self) -> tuple[str, str]:
        """The (src, dst) names the pair's runs go by."""
        return runs.class_view(self.domain, self.source), runs.class_view(self.domain, self.target)

    def check(self, project: Project) -> tuple[list[Sample], list[Sample]]:
        """The pair's train images; one-line errors for an unknown domain or class, a class with fewer than 2
        images (or none in the train split), or the same class twice."""
        project.domain(self.domain)
        return class_pair_samples(project, self.domain, (self.source, self.target))


def check_method(method: str) -> None:
    """A one-line error unless ``method`` is a between-class model."""
    if not entry(method).between_classes:
        raise StainshiftError(f"{method} translates between domains, not between classes of one domain; "
                              f"`stainshift rare` takes a between-class model ({DEFAULT_METHOD})")


def rare_request(pair: ClassPair, **fields: Any) -> TrainRequest:
    """The :class:`~stainshift.train.loop.TrainRequest` of a class translation (``fields`` as in that class)."""
    from stainshift.train.loop import TrainRequest

    fields.setdefault("method", DEFAULT_METHOD)
    check_method(fields["method"])
    return TrainRequest(src=pair.domain, dst=pair.domain, classes=(pair.source, pair.target), **fields)


# -- images as training saw them ----------------------------------------------------------------------------------
def training_view(image: np.ndarray, preprocessing: dict[str, Any]) -> np.ndarray:
    """``image`` rescaled as the run's training rescaled its domain (shorter side to ``load_size`` without a
    project cell diameter, else by the recorded scale factor)."""
    scale = float(preprocessing.get("scale") or 1.0)
    return rescale(image, training_factor(image.shape, scale, preprocessing.get("load_size")))


@torch.inference_mode()
def translate(translator: torch.nn.Module, images: list[np.ndarray], device: torch.device | str = "cpu"
              ) -> list[np.ndarray]:
    """Each image (RGB uint8, any size) through the translator, one at a time (sizes differ)."""
    out = []
    for image in images:
        y = translator(to_tensor(image)[None].to(device))
        out.append(to_uint8(y.clamp(0, 1).cpu())[0])
    return out


# -- scoring ------------------------------------------------------------------------------------------------------
@dataclass
class RareEpochScores:
    """One kept epoch's measures (epoch 0: the untranslated inputs)."""

    epoch: int
    size_change: float
    outline_iou: float
    found: float                  # fraction of outputs in which the segmentation found a cell, over the inputs'
    target_gap: float
    moved: dict[str, float] = field(default_factory=dict)
    p_target: float | None = None
    to_rate: float | None = None
    seconds: float = 0.0

    @property
    def keeps_cell(self) -> bool:
        return bool(self.found >= FOUND_MIN and self.outline_iou >= IOU_MIN and self.size_change <= SIZE_CHANGE_MAX)

    def as_dict(self) -> dict[str, Any]:
        row = {k: v for k, v in dataclasses.asdict(self).items() if k != "moved"}
        row.update({f"moved_{k}": v for k, v in self.moved.items()})
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()}


@dataclass
class RareSelection:
    run_dir: Path
    epoch: int
    rule: str
    fallback: bool
    reason: str
    scores: list[RareEpochScores]
    details: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def _nanmedian(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else float("nan")


class _Reference:
    """The real images' features: the "from" inputs and the "to" class, and the spread that scales them."""

    def __init__(self, inputs: np.ndarray, target: np.ndarray) -> None:
        self.index = [FEATURES.index(k) for k in MOVED]
        self.source_mean = np.nanmean(inputs[:, self.index], axis=0)
        self.target_mean = np.nanmean(target[:, self.index], axis=0)
        pooled = np.concatenate([inputs[:, self.index], target[:, self.index]])
        self.spread = np.maximum(np.nanstd(pooled, axis=0), 1e-6)
        self.distance = float(np.linalg.norm((self.source_mean - self.target_mean) / self.spread))

    def moved(self, outputs: np.ndarray) -> tuple[dict[str, float], float]:
        mean = np.nanmean(outputs[:, self.index], axis=0) if np.isfinite(outputs).any() else self.source_mean
        span = self.target_mean - self.source_mean
        moved = {k: float((m - s) / d) if abs(d) > 1e-9 else float("nan")
                 for k, m, s, d in zip(MOVED, mean, self.source_mean, span, strict=True)}
        gap = float(np.linalg.norm((mean - self.target_mean) / self.spread)) / max(self.distance, 1e-9)
        return moved, gap


def _classifier_inputs(outputs: list[np.ndarray], originals: list[np.ndarray], size: int, scale: float
                       ) -> torch.Tensor:
    """Outputs brought back to their inputs' pixel size, then through the classifier's scale and centre crop."""
    from stainshift.classify.evaluate import prepare_images

    back = [cv2.resize(y, (o.shape[1], o.shape[0]), interpolation=cv2.INTER_LINEAR) for y, o in
            zip(outputs, originals, strict=True)]
    return prepare_images(back, size, scale)


def score_epochs(project: Project, pair: ClassPair, run: Path, classifier: Classifier | None = None,
                 max_images: int | None = 64,
                 device: str | torch.device = "cpu", progress: bool = False) -> tuple[list[RareEpochScores], dict]:
    """Epoch 0 (the inputs) and every kept epoch of ``run`` (see the module docstring)."""
    source_val = [s for s in samples_in(project, pair.domain, "val") if s.label == pair.source]
    if not source_val:
        raise StainshiftError(f"class '{pair.source}' of '{pair.domain}' has no validation image to score the epochs "
                              "on: enlarge the val fraction (split = [train, val, test] in the project file)")
    if max_images:
        source_val = source_val[:max_images]
    target_train = class_pair_samples(project, pair.domain, (pair.source, pair.target))[1]
    epochs = runs.kept_epochs(run)
    first, meta = load_epoch(runs.epoch_file(run, epochs[0]))
    prep = meta["preprocessing"]["src"]
    originals = [read_sample(s) for s in source_val]
    inputs = [training_view(x, prep) for x in originals]
    input_features = measure_all(inputs)
    reference = _Reference(input_features, measure_all(training_view(read_sample(s), prep) for s in target_train))
    target_index, clf_scale = None, scale_factor(project, pair.domain)
    if classifier is not None:
        if pair.target not in classifier.classes:
            raise StainshiftError(f"the classifier's classes ({', '.join(classifier.classes)}) hold no "
                                  f"'{pair.target}'; pass a classifier of {pair.domain}'s classes")
        target_index = list(classifier.classes).index(pair.target)
        classifier = classifier.to(device).eval()

    def probabilities(images: list[np.ndarray]) -> tuple[float | None, float | None]:
        if classifier is None:
            return None, None
        x = _classifier_inputs(images, originals, int(classifier.input_size), clf_scale).to(device)
        with torch.inference_mode():
            p = torch.softmax(classifier(x).float(), dim=1).cpu().numpy()
        return float(p[:, target_index].mean()), float((p.argmax(1) == target_index).mean())

    p0, rate0 = probabilities(inputs)
    found_in = np.isfinite(input_features[:, 0])
    if not found_in.any():
        raise StainshiftError(f"the threshold segmentation finds no cell in the '{pair.source}' validation images "
                              f"of '{pair.domain}'; the morphology measures need a stained white cell per image")
    scores = [RareEpochScores(0, 0.0, 1.0, 1.0, 1.0, {k: 0.0 for k in MOVED}, p0, rate0)]
    from tqdm.auto import tqdm

    for epoch in tqdm(epochs, desc=f"rare select {pair.source} -> {pair.target}", unit="epoch",
                      disable=not progress):
        start = time.perf_counter()
        translator = (first if epoch == epochs[0] else load_epoch(runs.epoch_file(run, epoch))[0]).to(device)
        outputs = translate(translator, inputs, device)
        features = measure_all(outputs)
        ratio = features[:, 0] / input_features[:, 0]
        ious = np.array([outline_iou(x, y) for x, y in zip(inputs, outputs, strict=True)])
        moved, gap = reference.moved(features)
        p, rate = probabilities(outputs)
        found = float(np.isfinite(features[found_in, 0]).mean())
        scores.append(RareEpochScores(epoch, _nanmedian(np.abs(ratio - 1)), _nanmedian(ious), found, gap, moved, p,
                                      rate, round(time.perf_counter() - start, 3)))
    details = {"n_source_val": len(source_val), "n_target_train": len(target_train),
               "reference_distance": reference.distance, "cells_found_in_inputs": float(found_in.mean()),
               **_mask_agreement(source_val, inputs)}
    return scores, details


def _mask_agreement(samples: list[Sample], inputs: list[np.ndarray]) -> dict[str, float]:
    """Median Dice of the threshold segmentation with the domain's masks on the inputs (none without masks)."""
    from stainshift.data.domains import crop_box
    from stainshift.data.io import read_mask

    pairs = [(x, crop_box(read_mask(s.mask), s.box)) for s, x in zip(samples, inputs, strict=True) if s.mask]
    if not pairs:
        return {}
    dices = np.array([mask_agreement(x, m) for x, m in pairs], dtype=np.float64)
    return {"mask_dice_cell": _nanmedian(dices[:, 0]), "mask_dice_nucleus": _nanmedian(dices[:, 1]),
            "mask_images": len(pairs)}


def choose(scores: list[RareEpochScores], with_classifier: bool) -> tuple[int, str, bool, str]:
    """(epoch, rule, fallback, reason) by the rule of the module docstring."""
    candidates = [s for s in scores if s.epoch > 0]
    kept = [s for s in candidates if s.keeps_cell]
    rule = "target-probability" if with_classifier else "morphology"
    gates = (f"cells found >= {FOUND_MIN:.0%}, outline IoU >= {IOU_MIN} and size change <= "
             f"{SIZE_CHANGE_MAX:.0%}")
    if not kept:
        best = max(candidates, key=lambda s: (np.nan_to_num(s.outline_iou, nan=-1.0), -s.epoch))
        return best.epoch, rule, True, (f"no epoch kept the cell ({gates}); epoch {best.epoch} changed the outline "
                                        f"least (IoU {best.outline_iou:.2f})")
    if with_classifier:
        best = max(kept, key=lambda s: (s.p_target, -np.nan_to_num(s.target_gap, nan=np.inf), -s.epoch))
        why = f"the highest target-class probability ({best.p_target:.3f})"
    else:
        best = min(kept, key=lambda s: (np.nan_to_num(s.target_gap, nan=np.inf), s.epoch))
        why = f"the smallest gap to the target class's features ({best.target_gap:.3f})"
    return best.epoch, rule, False, f"epoch {best.epoch}: {why} among the {len(kept)} epoch(s) with {gates}"


def select_epoch(project: Project, pair: ClassPair, method: str = DEFAULT_METHOD, run_id: str | None = None,
                 classifier: str | Path | None = None, max_images: int | None = 64, device: str = "cpu",
                 progress: bool = False) -> RareSelection:
    """Score every kept epoch and choose one; writes ``selected.json`` (what ``--epoch best`` reads),
    ``selections/<rule>.json``, ``selection.csv`` and ``selection.png`` in the run folder."""
    from stainshift.device import resolve_device

    check_method(method)
    pair.check(project)
    run = runs.find_run(project, *pair.views, method, run_id)
    dev = resolve_device(device)
    model = None
    if classifier is not None:
        from stainshift.classify.models import load_classifier

        model = load_classifier(runs.find_classifier(project.runs, classifier), dev)
    scores, details = score_epochs(project, pair, run, model, max_images, dev, progress)
    epoch, rule, fallback, reason = choose(scores, model is not None)
    if fallback:
        warnings.warn(f"{run.name}: {reason}", stacklevel=2)
    details.update({"iou_min": IOU_MIN, "size_change_max": SIZE_CHANGE_MAX, "classifier": str(classifier or ""),
                    "domain": pair.domain, "from": pair.source, "to": pair.target})
    selection = RareSelection(run, epoch, rule, fallback, reason, scores, details)
    _write_selection(selection, pair)
    return selection


def _write_selection(sel: RareSelection, pair: ClassPair) -> None:
    import csv
    import io

    record = {"epoch": sel.epoch, "rule": sel.rule, "fallback": sel.fallback, "reason": sel.reason,
              "scores": [s.as_dict() for s in sel.scores], "run_id": sel.run_dir.name, "src": pair.views[0],
              "created": datetime.now(UTC).isoformat(timespec="seconds"), "scoring": "morphology", **sel.details}
    sel.files["selected"] = runs.selected_file(sel.run_dir)
    atomic_write_text(sel.files["selected"], json.dumps(record, indent=2))
    sel.files["record"] = runs.selection_file(sel.run_dir, sel.rule, sel.details["classifier"] or None)
    atomic_write_text(sel.files["record"], json.dumps(record, indent=2))
    rows = [s.as_dict() for s in sel.scores]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    sel.files["csv"] = runs.selection_table(sel.run_dir)
    atomic_write_text(sel.files["csv"], buffer.getvalue())
    sel.files["plot"] = plot_selection(sel, runs.selection_plot(sel.run_dir))


PLOTTED = (("outline_iou", "outline IoU (kept: higher)"), ("size_change", "size change (kept: lower)"),
           ("target_gap", "gap to target class (lower)"), ("p_target", "P(target class) (higher)"))


def plot_selection(sel: RareSelection, path: Path) -> Path:
    """The gates' and the target measures' curves over the kept epochs, the choice in red."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    keys = [(k, t) for k, t in PLOTTED if any(getattr(s, k) is not None for s in sel.scores)]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(3.1 * (len(keys) + 1), 3.0), squeeze=False)
    xs = [s.epoch for s in sel.scores]
    for ax, (key, title) in zip(axes[0], keys, strict=False):
        ax.plot(xs, [getattr(s, key) for s in sel.scores], "o-", ms=4)
        limit = {"outline_iou": IOU_MIN, "size_change": SIZE_CHANGE_MAX}.get(key)
        if limit is not None:
            ax.axhline(limit, color="tab:orange", ls="--", lw=1)
        ax.axvline(sel.epoch, color="tab:red", alpha=0.6)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("epoch (0 = inputs)", fontsize=8)
        ax.tick_params(labelsize=7)
    ax = axes[0][-1]
    for k in MOVED:
        ax.plot(xs, [s.moved.get(k) for s in sel.scores], "o-", ms=3, label=k)
    ax.axhline(1.0, color="gray", ls=":", lw=1)
    ax.axvline(sel.epoch, color="tab:red", alpha=0.6)
    ax.set_title("moved toward target (1 = target mean)", fontsize=8)
    ax.set_xlabel("epoch", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=5)
    fig.suptitle(f"{sel.details['domain']}: {sel.details['from']} -> {sel.details['to']}, {sel.run_dir.name}: "
                 f"epoch {sel.epoch} ({sel.rule}{', fallback' if sel.fallback else ''})", fontsize=9)
    return save_figure(fig, path)


def format_table(sel: RareSelection) -> str:
    """The per-epoch scores as text (the CLI prints it)."""
    keys = ["outline_iou", "size_change", "found", "target_gap"] + (
        ["p_target", "to_rate"] if sel.scores[0].p_target is not None else [])
    lines = ["  epoch " + " ".join(f"{k:>11s}" for k in keys)]
    for s in sel.scores:
        mark = "*" if s.epoch == sel.epoch else " "
        note = "  inputs (reference)" if s.epoch == 0 else ("" if s.keeps_cell else "  cell not kept")
        lines.append(f"{mark} {s.epoch:5d} " + " ".join(f"{getattr(s, k):11.3f}" for k in keys) + note)
    return "\n".join(lines)


# -- generation ---------------------------------------------------------------------------------------------------
def _variant(image: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 flips and right-angle turns (0: the image itself)."""
    turned = np.rot90(image, k % 4)
    return np.ascontiguousarray(turned[:, ::-1] if k // 4 % 2 else turned)


def generation_plan(sources: list[Sample], n: int, seed: int) -> list[tuple[int, int]]:
    """(source index, variant) for ``n`` images: every source once in a seeded order, then again flipped or
    turned (8 variants), so no two generated images come from the same input seen the same way."""
    if n > 8 * len(sources):
        raise StainshiftError(f"--n {n}: {len(sources)} source images give at most {8 * len(sources)} distinct "
                              "inputs (8 flips and turns each); pass a smaller --n")
    order = np.random.default_rng(seed).permutation(len(sources))
    return [(int(order[i % len(sources)]), i // len(sources)) for i in range(n)]


def generate(project: Project, pair: ClassPair, n: int, out: str | Path, *, method: str = DEFAULT_METHOD,
             epoch: str | int = "best", run_id: str | None = None, seed: int = 0, split: str = "train",
             device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """``n`` images of the "to" class made from the "from" class's ``split`` images, at their sources' pixel size,
    in ``out/<to>/`` (a class folder a domain can point at) with ``out/manifest.json``; resumes an interrupted run
    given the same arguments."""
    from stainshift.device import resolve_device
    from stainshift.provenance import code_version
    from stainshift.train.checkpoints import file_hash

    check_method(method)
    if n < 1:
        raise StainshiftError(f"--n {n}: pass the number of images to generate (>= 1)")
    if split not in ("train", "val"):
        raise StainshiftError(f"--split {split!r}: translate the train or val images; images made from the test "
                              "split would carry it into training")
    pair.check(project)
    sources = [s for s in samples_in(project, pair.domain, split) if s.label == pair.source]
    if not sources:
        raise StainshiftError(f"class '{pair.source}' of '{pair.domain}' has no {split} images to translate")
    checkpoint, chosen, _ = runs.resolve_epoch(project, *pair.views, method, epoch, run_id)
    translator, meta = load_epoch(checkpoint)
    prep = meta["preprocessing"]["src"]
    plan = generation_plan(sources, n, seed)
    out = Path(out)
    config = {"domain": pair.domain, "from": pair.source, "to": pair.target, "method": method, "run": meta.get("run"),
              "epoch": chosen, "checkpoint": str(checkpoint.resolve()), "checkpoint_hash": file_hash(checkpoint),
              "seed": int(seed), "n": int(n), "split": split}
    done: set[str] = set()
    if (out / MANIFEST).exists():
        previous = json.loads((out / MANIFEST).read_text())
        if previous.get("kind") != KIND or previous.get("config") != config:
            raise StainshiftError(f"{out}: holds images generated with other arguments or another checkpoint; "
                                  "pass another --out (nothing there was changed)")
        done = {e["image"] for e in previous["images"]}
    elif out.exists() and any(out.iterdir()):
        raise StainshiftError(f"{out}: folder is not empty and holds no {MANIFEST}; pass an empty or new --out")
    dev = resolve_device(device)
    translator = translator.to(dev).eval()
    from tqdm.auto import tqdm

    entries = []
    for i, (index, variant) in enumerate(tqdm(plan, desc=f"rare generate {pair.source} -> {pair.target}",
                                              unit="image", disable=not progress)):
        source = sources[index]
        name = f"{pair.target}/gen_{Path(source.key).stem}_v{variant}.png"
        if name not in done or not (out / name).exists():
            original = _variant(read_sample(source), variant)
            y = translate(translator, [training_view(original, prep)], dev)[0]
            h, w = original.shape[:2]
            if y.shape[:2] != (h, w):  # at the source's pixel size, so the domain's cell diameter still holds
                y = cv2.resize(y, (w, h), interpolation=cv2.INTER_AREA if y.shape[0] > h else cv2.INTER_LINEAR)
            write_image(out / name, y)
        entries.append({"image": name, "source": source.key, "variant": variant, "generated": True})
        if (i + 1) % 50 == 0:
            _write_manifest(out, config, entries, code_version())
    return _write_manifest(out, config, entries, code_version())


def _write_manifest(out: Path, config: dict, entries: list[dict], version: str) -> dict[str, Any]:
    manifest = {"kind": KIND, "code": version, "config": config, "images": entries,
                "note": "every image here is generated (see 'source'); none is a real cell of the 'to' class"}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest
