"""``stainshift benchmark``: the accuracy-before/after table (the core paper's Table 4 made into a tool), measured so
that a reviewer can accept it.

Classifiers trained on the TARGET domain's train split are evaluated on the SOURCE domain's test split under:

- the original images; each classical method; for every learned image-to-image model of the registry with runs
  serving the pair (CycleGAN, ColorizationGAN, ...), each kept epoch of each run (one run per GAN seed with
  ``gan_seeds``) and the epoch chosen under each selection rule;
- the cheap alternative a user would try first: the same classifier trained on the target WITH stain
  augmentation (HED jitter; L*a*b* statistics jitter after RandStainNA), on the original images;
- the classifier fine-tuned on the source's train split, at its best epoch on the source's validation split (the
  upper bound).

Selection is independent of reporting: one dedicated *selection classifier* (its own seed, trained on the target's
train split, never reported) scores every epoch for both rules; the reported classifiers take no part in choosing.

Statistics are paired (:mod:`stainshift.paired_stats`): one bootstrap resample of the test images is shared by
every condition and classifier; each row has 95% CIs for its accuracy, for its difference to the original images,
to the best classical method and to the best stain-augmentation classifier (each "best" taken on this test split,
which favours the competitor), and for gap closed = (acc - original) / (fine-tuned - original). A difference is
called better / worse only when its paired CI excludes 0. The summary over classifiers uses the mean accuracy of
the classifiers per resample, so its gap closed is the RATIO OF MEANS; a gap whose denominator's CI includes 0 is
flagged as noise.

Caches: harmonized test images (``runs/<src>_to_<dst>/benchmark/images/``) and classifiers are reused only when
what made them matches (checkpoint hash, options, split hashes); the table says which were reused. Results files
start with their provenance (command, options, commit, dirty tree), read before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stainshift import provenance, runs
from stainshift.atomic import atomic_write_text, save_figure
from stainshift.errors import StainshiftError
from stainshift.harmonize import HarmonizeRequest, default_context, harmonize
from stainshift.models.kinds import Kind
from stainshift.models.registry import names
from stainshift.project import Project
from stainshift.train.checkpoints import file_hash

# The paper's four classifiers: name -> (architecture, loss)
CLASSIFIERS = {"resnet18": ("resnet18", "ce"), "resnet18-focal": ("resnet18", "focal"),
               "resnet34": ("resnet34", "ce"), "resnet34-focal": ("resnet34", "focal")}
RULES = ("label-free", "labelled")  # the order of the table's "selected" rows
STAIN_AUGMENT = ("hed", "lab")
ORIGINAL, UPPER = "original", "fine-tuned on source (upper bound)"
# HarmonizeRequest's defaults, recorded with every harmonized folder
HARMONIZE_OPTIONS = {"fit_images": 200, "tile": 512, "overlap": 64, "keep_detail": True}


@dataclass(frozen=True)
class BenchmarkRequest:
    src: str
    dst: str
    classifiers: tuple[str, ...] = tuple(CLASSIFIERS)
    norm: str = "group"  # BatchNorm ResNets collapse under stain shift (DESIGN section 6 measured GroupNorm)
    size: int = 96
    epochs: int = 10
    finetune_epochs: int = 5
    # the paper fine-tunes on the site's data as it comes; class-balanced sampling (True) oversamples rare classes
    # (jtsc_tecom: 9 eosinophils in 120 training images) and lowered the upper bound's accuracy on jtsc (0.74 -> 0.42
    # for ResNet18, same macro-F1), so it is an option, not the default
    finetune_balanced: bool = False
    batch_size: int = 32
    seed: int = 0                              # the reported classifiers' seed
    gan_seeds: tuple[int, ...] | None = None   # one run per GAN seed (None: the pair's serving run only)
    run_prefix: str | None = None              # with gan_seeds: only runs whose id starts so (a training variant)
    selection_classifier: str = "resnet18"     # architecture/loss of the selection classifier (never reported)
    selection_seed: int = 1                    # its seed, other than any reported classifier's
    stain_augment: tuple[str, ...] = STAIN_AUGMENT
    n_boot: int = 2000
    shots: tuple[int, ...] = ()                # label curve: fine-tune on k labelled source images (0: as is)
    shot_draws: int = 3                        # random draws of the k images per point
    progress: bool = True
    track: bool = True

    def validate(self) -> None:
        for spec in (*self.classifiers, self.selection_classifier):
            if spec not in CLASSIFIERS:
                raise StainshiftError(f"unknown classifier '{spec}'; use some of {', '.join(CLASSIFIERS)}")
        if not self.classifiers:
            raise StainshiftError("no classifiers to report; pass --classifiers resnet18,...")
        unknown = sorted(set(self.stain_augment) - set(STAIN_AUGMENT))
        if unknown:
            raise StainshiftError(f"unknown stain augmentation {unknown}; use some of {', '.join(STAIN_AUGMENT)}")
        if self.gan_seeds is not None and not self.gan_seeds:
            raise StainshiftError("--seeds: give at least one GAN seed, e.g. 0,1,2")
        if self.selection_seed == self.seed:
            raise StainshiftError(f"the selection classifier's seed ({self.selection_seed}) must differ from the "
                                  "reported classifiers' (--seed): the classifier that picks an epoch is never one "
                                  "whose accuracy is reported")
        if self.n_boot < 100:
            raise StainshiftError(f"--boot {self.n_boot}: use at least 100 bootstrap resamples (default 2000)")
        if any(k < 0 for k in self.shots) or self.shot_draws < 1:
            raise StainshiftError(f"--shots {','.join(map(str, self.shots))}: give numbers of labelled images >= 0 "
                                  "(e.g. 0,10,25,50,100) and --shot-draws >= 1")


@dataclass
class Condition:
    """One set of images the classifiers see."""

    label: str
    method: str
    folder: Path | None = None
    epoch: int | None = None
    gan_seed: int | None = None
    run: Path | None = None
    reused: bool | None = None  # whether the harmonized folder came from an earlier run (None: no folder)


@dataclass
class Chosen:
    """An epoch chosen by a rule for one run."""

    method: str
    run: Path
    gan_seed: int | None
    rule: str
    epoch: int
    fallback: bool
    reason: str
    scores: Path | None = None


@dataclass
class BenchmarkResult:
    table: pd.DataFrame                         # one row per classifier and condition
    summary: pd.DataFrame                       # mean over classifiers, per condition
    seeds: pd.DataFrame                         # per learned method and rule: selected / best / worst across seeds
    files: dict[str, Path] = field(default_factory=dict)
    curve: pd.DataFrame | None = None           # --shots: accuracy vs labelled source images, per condition


# -- images -------------------------------------------------------------------------------------------------------
def _split_hashes(project: Project, *domains: str) -> dict[str, str | None]:
    return {d: file_hash(runs.split_file(project, d)) if runs.split_file(project, d).exists() else None
            for d in domains}


def _images(project: Project, r: BenchmarkRequest, name: str, method: str, epoch: int | None = None,
            run: Path | None = None) -> tuple[Path, bool]:
    """Harmonized source images in a folder of their own, reused only when made the same way."""
    target = runs.benchmark_images(project, r.src, r.dst, name)
    made_by = {"method": method, "epoch": epoch, "run": run.name if run else None,
               "checkpoint": file_hash(runs.epoch_file(run, epoch)) if run is not None and epoch else None,
               "harmonize": {**HARMONIZE_OPTIONS, "context": default_context(project, r.src).value},
               "splits": _split_hashes(project, r.src, r.dst)}
    record = target / "made_by.json"
    if (target / "manifest.csv").exists() and record.exists() and json.loads(record.read_text()) == made_by:
        return target, True
    if target.exists():
        shutil.rmtree(target)
    harmonize(project, HarmonizeRequest(r.src, r.dst, method=method, epoch=epoch or "last",
                                        run_id=run.name if run else None, out=target, progress=r.progress,
                                        **HARMONIZE_OPTIONS))
    atomic_write_text(record, json.dumps(made_by, indent=2))
    return target, False


def learned_runs(project: Project, r: BenchmarkRequest) -> dict[str, dict[int | None, Path]]:
    """Per learned image-to-image method: the runs to benchmark, by GAN seed (None: the serving run)."""
    import warnings

    out: dict[str, dict[int | None, Path]] = {}
    for method in names(Kind.LEARNED, images_only=True):
        if r.gan_seeds is None:
            run = runs.serving_run(project, r.src, r.dst, method)
            if run is not None and runs.kept_epochs(run):
                out[method] = {None: run}
            continue
        by_seed = runs.runs_by_seed(project, r.src, r.dst, method, r.run_prefix)
        found = {s: by_seed[s] for s in r.gan_seeds if s in by_seed}
        missing = [s for s in r.gan_seeds if s not in by_seed]
        if found and missing:
            warnings.warn(f"{method}: no run with seed {', '.join(map(str, missing))} for {r.src} -> {r.dst}; "
                          f"reported with seeds {', '.join(map(str, found))} (train the others with `stainshift "
                          f"train {method} --src {r.src} --dst {r.dst} --seed N`)", stacklevel=3)
        if found:
            out[method] = found
    if r.gan_seeds is not None and not out:  # asked for GAN seeds: a table without any learned row is not that
        prefix = f" whose id starts with '{r.run_prefix}'" if r.run_prefix else ""
        raise StainshiftError(f"no trained run{prefix} with seed {', '.join(map(str, r.gan_seeds))} for {r.src} -> "
                              f"{r.dst} (any learned method); train one first (`stainshift train cyclegan --src "
                              f"{r.src} --dst {r.dst} --seed N`) or leave out --seeds")
    return out


def condition_label(method: str, gan_seed: int | None, what: str) -> str:
    """A learned condition's name in the tables: ``<method> [s<gan seed>] <what>`` (``what``: ``e3``,
    ``selected (labelled)``)."""
    return f"{method} {what}" if gan_seed is None else f"{method} s{gan_seed} {what}"


def selection_classifier_name(r: BenchmarkRequest) -> str:
    """The name of the classifier the benchmark trains to select epochs: ``<default name>-select-s<seed>``."""
    from stainshift.classify.train import default_name

    arch, loss = CLASSIFIERS[r.selection_classifier]
    return f"{default_name(r.dst, arch, loss, r.norm)}-select-s{r.selection_seed}"


def _conditions(project: Project, r: BenchmarkRequest,
                learned: dict[str, dict[int | None, Path]]) -> list[Condition]:
    """Every set of images the classifiers see; the harmonized folders are written here, once."""
    conditions = [Condition(ORIGINAL, ORIGINAL)]
    for method in names(Kind.CLASSICAL, images_only=True):
        folder, reused = _images(project, r, method, method)
        conditions.append(Condition(method, method, folder, reused=reused))
    for method, by_seed in learned.items():
        for gan_seed, run in by_seed.items():
            for epoch in runs.kept_epochs(run):
                folder, reused = _images(project, r, runs.learned_condition(run, r.src, r.dst, epoch), method, epoch,
                                         run)
                conditions.append(Condition(condition_label(method, gan_seed, f"e{epoch}"), method, folder, epoch,
                                            gan_seed, run, reused))
    return conditions


# -- classifiers --------------------------------------------------------------------------------------------------
def benchmark_classifier(project: Project, r: BenchmarkRequest, spec: str, seed: int,
                         stain_augment: str | None = None, name: str | None = None) -> tuple[Path, bool]:
    """A target-domain classifier: reused when one made by exactly this request exists, else trained."""
    from stainshift.classify.train import ClassifierRequest, default_name, reuse_check, train_classifier

    arch, loss = CLASSIFIERS[spec]
    name = name or default_name(r.dst, arch, loss, r.norm, stain_augment=stain_augment)
    request = ClassifierRequest(r.dst, arch=arch, loss=loss, norm=r.norm, size=r.size, epochs=r.epochs,
                                batch_size=r.batch_size, seed=seed, stain_augment=stain_augment, name=name,
                                overwrite=True, progress=r.progress, track=r.track)
    existing = runs.classifier_dir(project, name) / runs.MODEL_FILE
    if existing.exists() and reuse_check(existing, request, project) is None:
        return existing, True
    return train_classifier(project, request), False


def _finetuned(project: Project, r: BenchmarkRequest, model: Path) -> tuple[Path, bool]:
    """The classifier fine-tuned on the source's train split (best epoch on its val split): reused when an earlier
    benchmark made it the same way, else trained."""
    from stainshift.classify.train import finetune_classifier, finetune_reuse_check, finetuned_name

    options = {"epochs": r.finetune_epochs, "batch_size": r.batch_size, "balanced": r.finetune_balanced,
               "seed": r.seed, "keep": "best"}
    existing = runs.classifier_dir(project, finetuned_name(model.parent.name, r.src)) / runs.MODEL_FILE
    if existing.exists() and finetune_reuse_check(existing, model, r.src, project=project, **options) is None:
        return existing, True
    return finetune_classifier(project, model, r.src, overwrite=True, progress=r.progress, track=r.track,
                               **options), False


# -- selection ----------------------------------------------------------------------------------------------------
def _select(project: Project, r: BenchmarkRequest, selector: Path, learned: dict[str, dict[int | None, Path]],
            out: Path) -> list[Chosen]:
    """Both rules for every run, from one scoring pass by the selection classifier; the per-epoch scores are copied
    next to the tables. ``selected.json`` keeps the labelled choice (the rule that applies when labels exist)."""
    from stainshift.select import apply_rule, select_epoch, write_record

    chosen: list[Chosen] = []
    for method, by_seed in learned.items():
        for gan_seed, run in by_seed.items():
            labelled = select_epoch(project, r.src, r.dst, method, classifier=selector, rule="labelled",
                                    run_id=run.name if run.parent.parent.name == f"{r.src}_to_{r.dst}" else None,
                                    progress=r.progress, track=r.track)
            label_free = apply_rule(labelled, "label-free")
            write_record(label_free)
            scores = out / f"selection_{method}_{run.name}.csv"
            shutil.copyfile(labelled.files["csv"], scores)
            for sel in (label_free, labelled):
                chosen.append(Chosen(method, run, gan_seed, sel.rule, sel.epoch, sel.fallback, sel.reason, scores))
    return chosen


# -- the table ----------------------------------------------------------------------------------------------------
def correct_mask(report: Any, keys: list[str] | None) -> np.ndarray:
    """Per test image, whether ``report`` classified it right (``keys``: the image order every condition shares)."""
    if keys is not None and list(report.keys) != keys:
        raise StainshiftError("the conditions were evaluated on different test images; report this as a bug")
    return np.asarray(report.y_true) == np.asarray(report.y_pred)


def _stats_columns(pb: Any, correct: np.ndarray, refs: dict[str, np.ndarray], original: np.ndarray,
                   upper: np.ndarray) -> dict[str, Any]:
    """Accuracy CI, paired differences to each reference, gap closed: the columns of one row."""
    acc = pb.accuracy(correct)
    row: dict[str, Any] = {"accuracy": acc.value, "ci_low": acc.low, "ci_high": acc.high}
    for name, ref in refs.items():
        d = pb.difference(correct, ref)
        row.update({f"d_{name}": d.value, f"d_{name}_low": d.low, f"d_{name}_high": d.high, f"vs_{name}": d.verdict()})
    gap = pb.gap_closed(correct, original, upper)
    row.update({"gap_closed": gap.value, "gap_low": gap.low, "gap_high": gap.high,
                "gap_in_noise": gap.denominator_in_noise})
    return row


def _references(rows: dict[str, np.ndarray], accuracy: dict[str, float], aug_labels: list[str]) -> dict[str, str]:
    """The labels of the best classical method and the best stain-augmentation classifier, by test accuracy."""
    classical = [m for m in names(Kind.CLASSICAL, images_only=True) if m in rows]
    refs = {"original": ORIGINAL}
    if classical:
        refs["classical"] = max(classical, key=lambda m: accuracy[m])
    if aug_labels:
        refs["augment"] = max(aug_labels, key=lambda m: accuracy[m])
    return refs


class _Measurements:
    """One classifier's per-image correctness under each condition (always the same test images, in order)."""

    def __init__(self, project: Project, src: str) -> None:
        self.project, self.src = project, src
        self.keys: list[str] | None = None
        self.rows: dict[str, np.ndarray] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self._loaded: dict[Path, Any] = {}

    def measure(self, label: str, classifier: Path, folder: Path | None, **info: Any) -> None:
        from stainshift.classify.evaluate import evaluate
        from stainshift.classify.models import load_classifier

        if classifier not in self._loaded:  # one load per classifier, not one per condition
            self._loaded[classifier] = load_classifier(classifier)
        report = evaluate(self._loaded[classifier], self.project, self.src, "test", harmonized_root=folder,
                          n_boot=0)
        self.rows[label] = correct_mask(report, self.keys)
        self.keys = list(report.keys)
        self.meta[label] = {"macro_f1": report.macro_f1, "n": report.n, **info}


def run_benchmark(project: Project, r: BenchmarkRequest, argv: list[str] | None = None) -> BenchmarkResult:
    """Build the tables and write them under the pair's benchmark folder; see the module docstring."""
    from stainshift.paired_stats import PairedBootstrap

    made = provenance.record(dataclasses.asdict(r), argv)  # before anything runs
    r.validate()
    project.domain(r.src), project.domain(r.dst)
    if r.shots:  # the label curve comes last: fail now, not after an hour of harmonizing
        from stainshift.data.domains import class_names
        from stainshift.label_curve import check_shots

        check_shots(project, r.src, r.shots, class_names(project.domain(r.dst)))
    learned = learned_runs(project, r)
    out = runs.benchmark_dir(project, r.src, r.dst)
    out.mkdir(parents=True, exist_ok=True)
    conditions = _conditions(project, r, learned)
    chosen: list[Chosen] = []
    selector = None
    if learned:
        selector, _ = benchmark_classifier(project, r, r.selection_classifier, r.selection_seed,
                                  name=selection_classifier_name(r))
        chosen = _select(project, r, selector, learned, out)

    records: list[dict[str, Any]] = []
    correct_by: dict[str, dict[str, np.ndarray]] = {}
    pb = None
    curve = None
    for spec in r.classifiers:
        model, model_reused = benchmark_classifier(project, r, spec, r.seed)
        m = _Measurements(project, r.src)
        for c in conditions:
            m.measure(c.label, model, c.folder, method=c.method, epoch=c.epoch, gan_seed=c.gan_seed,
                      images_reused=c.reused, classifier_reused=model_reused)
        aug_labels = []
        augmented_models: dict[str, Path] = {}
        for kind in r.stain_augment:
            augmented, reused = benchmark_classifier(project, r, spec, r.seed, stain_augment=kind)
            label = f"stain augmentation ({kind})"
            m.measure(label, augmented, None, method=f"augment-{kind}", classifier_reused=reused)
            aug_labels.append(label)
            augmented_models[label] = augmented
        for c in chosen:
            picked = condition_label(c.method, c.gan_seed, f"e{c.epoch}")
            label = condition_label(c.method, c.gan_seed, f"selected ({c.rule})")
            m.rows[label] = m.rows[picked]
            m.meta[label] = {**m.meta[picked], "selected_by": Path(selector).parent.name if selector else None,
                             "selection_fallback": c.fallback, "selection_reason": c.reason}
        tuned, tuned_reused = _finetuned(project, r, model)
        m.measure(UPPER, tuned, None, method="finetuned", classifier_reused=tuned_reused)

        rows, meta = m.rows, m.meta
        pb = pb or PairedBootstrap(len(m.keys or []), r.n_boot, seed=r.seed)
        accuracy = {label: float(v.mean()) for label, v in rows.items()}
        refs_labels = _references(rows, accuracy, aug_labels)
        refs = {name: rows[label] for name, label in refs_labels.items()}
        for label, correct in rows.items():
            records.append({"classifier": spec, "condition": label, **meta[label],
                            **_stats_columns(pb, correct, refs, rows[ORIGINAL], rows[UPPER])})
        correct_by[spec] = rows
        if r.shots and spec == r.classifiers[0]:
            curve = _label_curve(project, r, model, conditions, chosen, refs_labels, augmented_models)
    table = pd.DataFrame(records)
    summary = _summary(pb, correct_by, table)
    seeds = _seed_table(summary, chosen, learned)
    result = BenchmarkResult(table, summary, seeds, curve=curve)
    write_tables(result, out, r, made, selector)
    return result


def _label_curve(project: Project, r: BenchmarkRequest, model: Path, conditions: list[Condition],
                 chosen: list[Chosen], refs: dict[str, str], augmented: dict[str, Path]) -> pd.DataFrame:
    """The first reported classifier's label curve on: the original images, the best classical method, each learned
    method's labelled pick for its first GAN seed, and the best stain-augmented classifier; paired with the original
    images at the same k (the same test images and the same draws of labelled images)."""
    from stainshift.label_curve import ShotCondition, label_curve
    from stainshift.paired_stats import PairedBootstrap

    folders = {c.label: c.folder for c in conditions}
    shot = [ShotCondition(ORIGINAL, model)]
    if "classical" in refs:
        shot.append(ShotCondition(refs["classical"], model, folders[refs["classical"]]))
    first_seed: dict[str, Chosen] = {}
    for c in chosen:
        if c.rule == "labelled" and c.method not in first_seed:
            first_seed[c.method] = c
    for c in first_seed.values():
        shot.append(ShotCondition(condition_label(c.method, c.gan_seed, f"selected ({c.rule})"), model,
                                  folders[condition_label(c.method, c.gan_seed, f"e{c.epoch}")]))
    if "augment" in refs:
        shot.append(ShotCondition(refs["augment"], augmented[refs["augment"]]))
    rows, correct = label_curve(project, r.src, shot, sorted(set(r.shots)), r.shot_draws, r.seed,
                                progress=r.progress)
    out = []
    for (label, k), matrix in correct.items():
        boot = PairedBootstrap(matrix.shape[1], r.n_boot, seed=r.seed)
        acc = boot.accuracy(matrix)
        base = correct[(ORIGINAL, k)]
        diff = boot.difference(matrix, base) if base.shape == matrix.shape else None
        out.append({"condition": label, "k": k, "draws": matrix.shape[0], "n": matrix.shape[1],
                    "accuracy": acc.value, "ci_low": acc.low, "ci_high": acc.high,
                    "accuracy_sd_over_draws": float(np.std([row["accuracy"] for row in rows
                                                            if row["condition"] == label and row["k"] == k])),
                    "d_original": diff.value if diff else np.nan, "d_original_low": diff.low if diff else np.nan,
                    "d_original_high": diff.high if diff else np.nan,
                    "vs_original": diff.verdict() if diff else ""})
    return pd.DataFrame(out)


def _summary(pb: Any, correct_by: dict[str, dict[str, np.ndarray]], table: pd.DataFrame) -> pd.DataFrame:
    """Per condition, the mean over classifiers (paired across classifiers and conditions)."""
    specs = list(correct_by)
    labels = [label for label in correct_by[specs[0]] if all(label in correct_by[s] for s in specs)]
    stacked = {label: np.stack([correct_by[s][label] for s in specs]) for label in labels}
    accuracy = {label: float(v.mean()) for label, v in stacked.items()}
    augment = [label for label in labels if label.startswith("stain augmentation")]
    refs = {name: stacked[label] for name, label in _references(stacked, accuracy, augment).items()}
    rows = []
    for label in labels:
        first = table[(table.classifier == specs[0]) & (table.condition == label)].iloc[0]
        f1 = table[table.condition == label].macro_f1.mean()
        rows.append({"condition": label, "method": first.method, "gan_seed": first.get("gan_seed"),
                     "epoch": first.get("epoch"), "macro_f1": f1, "n": first.n, "classifiers": len(specs),
                     **_stats_columns(pb, stacked[label], refs, stacked[ORIGINAL], stacked[UPPER])})
    return pd.DataFrame(rows)


def _seed_table(summary: pd.DataFrame, chosen: list[Chosen], learned: dict[str, dict[int | None, Path]]
                ) -> pd.DataFrame:
    """Per learned method and rule: the selected epoch's accuracy (mean over classifiers) across GAN seeds, next to
    each seed's best and worst kept epoch, with each seed's paired verdicts against the competitors."""
    rows = []
    by_label = summary.set_index("condition")
    for method, by_seed in learned.items():
        for rule in RULES:
            picked, best, worst, verdicts = [], [], [], []
            for gan_seed, run in by_seed.items():
                kept = [condition_label(method, gan_seed, f"e{e}") for e in runs.kept_epochs(run)]
                accs = [float(by_label.loc[k, "accuracy"]) for k in kept if k in by_label.index]
                label = condition_label(method, gan_seed, f"selected ({rule})")
                if label not in by_label.index or not accs:
                    continue
                row = by_label.loc[label]
                picked.append(float(row["accuracy"]))
                best.append(max(accs))
                worst.append(min(accs))
                verdict = f"{row.get('vs_classical', 'n.s.')}/{row.get('vs_augment', 'n.s.')}"
                verdicts.append(verdict if gan_seed is None else f"s{gan_seed}: {verdict}")
            if not picked:
                continue
            rows.append({"method": method, "rule": rule, "seeds": len(picked),
                         "selected_mean": float(np.mean(picked)), "selected_sd": _sd(picked),
                         "selected_min": min(picked), "selected_max": max(picked),
                         "best_mean": float(np.mean(best)), "best_sd": _sd(best),
                         "worst_mean": float(np.mean(worst)), "worst_sd": _sd(worst),
                         "vs_classical/vs_augment": ", ".join(verdicts)})
    return pd.DataFrame(rows)


def _sd(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


# -- files --------------------------------------------------------------------------------------------------------
def _pct(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0%}"


def _ci(value: float, low: float, high: float, digits: int = 3) -> str:
    return f"{value:.{digits}f} ({low:.{digits}f} to {high:.{digits}f})"


def _diff(row: Any, name: str) -> str:
    if f"d_{name}" not in row or pd.isna(row[f"d_{name}"]):
        return ""
    return f"{row[f'd_{name}']:+.3f} ({row[f'd_{name}_low']:+.3f} to {row[f'd_{name}_high']:+.3f}) {row[f'vs_{name}']}"


def _gap(row: Any) -> str:
    if pd.isna(row["gap_closed"]):
        return "n/a"
    noise = " (denominator in noise)" if row["gap_in_noise"] else ""
    return f"{row['gap_closed']:.0%} ({_pct(row['gap_low'])} to {_pct(row['gap_high'])}){noise}"


def markdown_table(frame: pd.DataFrame, first: str) -> list[str]:
    lines = [f"| {first} | accuracy (95% CI) | macro-F1 | vs original | vs best classical | vs best stain "
             "augmentation | gap closed |", "|---|---|---:|---|---|---|---|"]
    for row in frame.to_dict("records"):
        name = row["condition"] if first == "condition" else f"{row['classifier']} | {row['condition']}"
        lines.append(f"| {name} | {_ci(row['accuracy'], row['ci_low'], row['ci_high'])} | {row['macro_f1']:.3f} | "
                     f"{_diff(row, 'original')} | {_diff(row, 'classical')} | {_diff(row, 'augment')} | "
                     f"{_gap(row)} |")
    if first != "condition":
        lines[0] = lines[0].replace(f"| {first} |", "| classifier | condition |")
        lines[1] = "|---|" + lines[1]
    return lines


def seed_lines(seeds: pd.DataFrame) -> list[str]:
    """The across-seeds table as markdown lines."""
    lines = ["| method | rule | seeds | selected: mean (sd) [min-max] | best kept epoch: mean (sd) | worst kept "
             "epoch: mean (sd) | selected vs best classical / best stain augmentation |",
             "|---|---|---:|---|---|---|---|"]
    for s in seeds.to_dict("records"):
        lines.append(f"| {s['method']} | {s['rule']} | {s['seeds']} | {s['selected_mean']:.3f} "
                     f"({s['selected_sd']:.3f}) [{s['selected_min']:.3f}-{s['selected_max']:.3f}] | "
                     f"{s['best_mean']:.3f} ({s['best_sd']:.3f}) | {s['worst_mean']:.3f} ({s['worst_sd']:.3f}) | "
                     f"{s['vs_classical/vs_augment']} |")
    return lines


def write_tables(result: BenchmarkResult, out: Path, r: BenchmarkRequest, made: dict[str, Any],
                 selector: Path | None) -> None:
    """benchmark.md (provenance, summary, seeds, every classifier), the three CSVs and the accuracy-vs-epoch plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    result.files = {"table": out / "benchmark.csv", "summary": out / "summary.csv", "seeds": out / "seeds.csv",
                    "markdown": out / "benchmark.md", "plot": out / "accuracy_vs_epoch.png",
                    "provenance": out / "provenance.json"}
    atomic_write_text(result.files["table"], result.table.to_csv(index=False))
    atomic_write_text(result.files["summary"], result.summary.to_csv(index=False))
    atomic_write_text(result.files["seeds"], result.seeds.to_csv(index=False))
    atomic_write_text(result.files["provenance"], json.dumps(made, indent=2, default=str))
    t = result.table
    reused = t[["images_reused", "classifier_reused"]].fillna(False).astype(bool)
    lines = [f"# {r.src} -> {r.dst}: accuracy on {r.src}'s test split", "",
             f"- command: `{made['command']}`; started {made['started']}; commit {made['commit']}"
             f"{' (uncommitted changes)' if made['dirty'] else ''}",
             f"- classifiers reported: {', '.join(r.classifiers)} ({r.norm} norm, seed {r.seed}); epochs chosen by "
             f"the selection classifier `{Path(selector).parent.name if selector else 'none'}` (seed "
             f"{r.selection_seed}), never reported",
             f"- paired bootstrap: {r.n_boot} resamples of the {int(t.n.iloc[0])} test images, shared by every row; "
             "better/worse only when the paired 95% CI excludes 0; best classical / best stain augmentation taken "
             "on this test split (favours the competitor)",
             "- gap closed = (acc - original) / (fine-tuned - original); in the summary, the ratio of the means over "
             "classifiers",
             f"- reused from earlier runs: {int(reused.images_reused.sum())} image rows, "
             f"{int(reused.classifier_reused.sum())} classifier rows (matching checkpoint hash, options, splits)", "",
             f"## Summary (mean of {len(r.classifiers)} classifier{'s' if len(r.classifiers) > 1 else ''})", ""]
    lines += markdown_table(result.summary, "condition")
    if len(result.seeds):
        lines += ["", "## Across GAN seeds (accuracy, mean of the classifiers)", "", *seed_lines(result.seeds)]
    selected = t[t.condition.str.contains("selected")].drop_duplicates("condition")
    if len(selected):
        lines += ["", "## Selections", "", "| condition | epoch | fallback | reason |", "|---|---:|---|---|"]
        lines += [f"| {row['condition']} | {int(row['epoch'])} | {'yes' if row['selection_fallback'] else 'no'} | "
                  f"{row['selection_reason']} |" for row in selected.to_dict("records")]
        lines += ["", "Per-epoch selection scores: " + ", ".join(
            f"`{p.name}`" for p in sorted(out.glob("selection_*.csv")))]
    if result.curve is not None:
        lines += ["", *curve_lines(result.curve, r, "label_curve.png")]
        write_curve(result.curve, out, r)
        result.files["curve"] = out / "label_curve.csv"
    lines += ["", "## Every classifier", "", *markdown_table(t, "classifier")]
    lines += ["", "![accuracy vs epoch](accuracy_vs_epoch.png)", ""]
    atomic_write_text(result.files["markdown"], "\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(6, 4))
    plot_accuracy_vs_epoch(ax, t, "cyclegan", label="{classifier}: cyclegan")
    ax.set(xlabel="CycleGAN epoch", ylabel=f"accuracy on {r.src} test", title="dotted: original, dashed: fine-tuned")
    ax.legend(fontsize=7)
    save_figure(fig, result.files["plot"])


def plot_accuracy_vs_epoch(ax, frame: pd.DataFrame, method: str, label: str = "{classifier}", **style) -> None:
    """One line per classifier (and GAN seed): the accuracy of each kept epoch of ``method``; dotted at the
    classifier's accuracy on the original images, dashed at its fine-tuned upper bound."""
    import matplotlib.pyplot as plt

    for spec, group in frame.groupby("classifier", sort=False):
        epochs = group[(group.method == method) & ~group.condition.str.contains("selected")]
        seeds = epochs.gan_seed.dropna().unique() if "gan_seed" in epochs else []
        color = None
        for i, seed in enumerate(seeds if len(seeds) else [None]):  # one colour per classifier, a marker per seed
            part = epochs if seed is None else epochs[epochs.gan_seed == seed]
            name = label.format(classifier=spec) + ("" if seed is None else f" s{int(seed)}")
            line = ax.plot(part.epoch, part.accuracy, marker="os^vD"[i % 5], ls=("-", "--", ":")[i % 3], label=name,
                           color=color, **style)[0]
            color = line.get_color()
        if color is None:
            continue
        ax.axhline(group[group.condition == ORIGINAL].accuracy.iloc[0], color=color, ls=":", lw=1)
        ax.axhline(group[group.condition == UPPER].accuracy.iloc[0], color=color, ls="--", lw=1)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))


def curve_lines(curve: pd.DataFrame, r: BenchmarkRequest, picture: str) -> list[str]:
    """The label curve as a markdown table: accuracy (95% CI) per condition and k, with the paired difference to the
    original images at the same k."""
    ks = sorted(curve.k.unique())
    lines = [f"## Labelled source images: accuracy after fine-tuning on k of them ({r.shot_draws} draws)", "",
             f"{r.classifiers[0]}, fine-tuned in memory on k images of {r.src}'s train split "
             "(:mod:`stainshift.label_curve`); vs original: paired difference at the same k (the same draws).", "",
             "| condition | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for condition, part in curve.groupby("condition", sort=False):
        cells = []
        for k in ks:
            row = part[part.k == k]
            if not len(row):
                cells.append("-")
                continue
            row = row.iloc[0]
            verdict = "" if condition == ORIGINAL else f"; {row.d_original:+.3f} {row.vs_original}"
            cells.append(f"{row.accuracy:.3f} ({row.ci_low:.3f}-{row.ci_high:.3f}){verdict}")
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    return [*lines, "", f"![label curve]({picture})"]


def write_curve(curve: pd.DataFrame, out: Path, r: BenchmarkRequest) -> None:
    atomic_write_text(out / "label_curve.csv", curve.to_csv(index=False))
    plot_label_curve(curve, r.src, r.dst, out / "label_curve.png")


def plot_label_curve(curve: pd.DataFrame, src: str, dst: str, path: Path) -> None:
    """Accuracy against k per condition, with the 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for condition, part in curve.groupby("condition", sort=False):
        part = part.sort_values("k")
        ax.errorbar(part.k, part.accuracy, yerr=[part.accuracy - part.ci_low, part.ci_high - part.accuracy],
                    marker="o", capsize=3, label=condition)
    ax.set(xlabel=f"labelled {src} images the classifier was fine-tuned on", ylabel=f"accuracy on {src} test",
           ylim=(0, 1), title=f"{src} -> {dst}: {int(curve.draws.max())} draws per point, 95% CI")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
