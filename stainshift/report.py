"""``stainshift report``: one static HTML page of a pair's benchmark, to read offline and to hand to a reviewer.

Everything on the page is read from what earlier commands wrote: the benchmark's tables, plot and provenance
(``runs/<src>_to_<dst>/benchmark/``), each learned run's selection records, selection plot, training samples and
mlflow run id, and the saved splits. Only the confusion matrices are computed here, because the benchmark keeps its
per-image predictions in memory: each is the stored classifier evaluated again on the stored images, and its
accuracy is checked against the table's (a mismatch says the classifier or images changed after the benchmark).

The page (``index.html``) and the files it shows (``files/``, relative links) go to
``runs/<src>_to_<dst>/report/`` or ``out``; it loads nothing from the network and runs no script. The images are
written first and the page last, each atomically; files of an earlier report that the new page does not show are
removed afterwards. ``files/`` holds a marker (``files/.stainshift-report``) that says the report owns it: a folder
that has ``files/`` or ``index.html`` without it is someone else's and is refused, never overwritten or pruned.
Templates: ``stainshift/templates/report.html`` and ``report.css``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from stainshift import provenance, runs
from stainshift.atomic import atomic_write_bytes, atomic_write_text
from stainshift.errors import StainshiftError
from stainshift.models.kinds import Kind
from stainshift.models.registry import names
from stainshift.project import Project
from stainshift.train.checkpoints import file_hash

PAGE = "index.html"
FILES = "files"          # the report's own folder of images next to the page (emptied of stale files)
MARKER = ".stainshift-report"  # in files/: the report wrote this folder, so it may prune it
MARKER_TEXT = ("stainshift report wrote this folder and the index.html next to it; the next `stainshift report` "
               "with the same --out deletes every file here that its page does not show.\n")
CELL_PX = 128            # cells larger than this are scaled down for the page
SCORE_COLUMNS = ("ssim", "color", "fd", "fid", "accuracy", "macro_f1", "min_recall", "worst_class", "drift",
                 "selectable")
# benchmark.csv columns the page shows, with how they are written (the cells carry the file's exact text too)
REFERENCES = (("original", "vs original"), ("classical", "vs best classical"),
              ("augment", "vs best stain augmentation"))
NUMBER_FORMATS = {"accuracy": "{:.3f}", "ci_low": "{:.3f}", "ci_high": "{:.3f}", "macro_f1": "{:.3f}",
                  **{f"d_{r}{p}": "{:+.3f}" for r, _ in REFERENCES for p in ("", "_low", "_high")},
                  "gap_closed": "{:.0%}", "gap_low": "{:.0%}", "gap_high": "{:.0%}"}


# -- values on the page -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Number:
    """A number of a results file as the page shows it: ``raw`` is its exact text in the file ("" when empty)."""

    column: str
    raw: str
    shown: str


def _is_empty(raw: str | None) -> bool:
    return raw is None or raw.strip() in ("", "nan", "NaN")


def _number(row: dict[str, str], column: str) -> Number:
    raw = row.get(column, "")
    if _is_empty(raw):
        return Number(column, "", "–")
    return Number(column, raw, NUMBER_FORMATS.get(column, "{:.3f}").format(float(raw)))


def _float(raw: str | None) -> float | None:
    return None if _is_empty(raw) else float(raw)


def _seed(raw: str | None) -> int | None:
    value = _float(raw)
    return None if value is None else int(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


@dataclass
class TableRow:
    """One row of benchmark.csv (or summary.csv): its numbers, verdicts and what kind of condition it is."""

    classifier: str | None
    condition: str
    kind: str
    numbers: dict[str, Number]
    verdicts: dict[str, str]
    gap_in_noise: bool
    epoch: int | None
    method: str
    gan_seed: int | None


@dataclass
class Card:
    title: str
    condition: str
    accuracy: Number
    ci_low: Number
    ci_high: Number
    verdict: str
    kind: str


@dataclass
class GridColumn:
    label: str
    kind: str
    accuracy: str
    badges: list[str]
    images: list[str | None]
    note: str = ""


@dataclass
class Confusion:
    condition: str
    note: str
    classifier: str
    classes: list[str]
    counts: list[list[int]]
    shades: list[list[float]]
    accuracy: float
    table_accuracy: float
    agrees: bool


@dataclass
class RuleChoice:
    rule: str
    epoch: int | None
    table_epoch: int | None
    classifier: str
    created: str
    primary: str
    fallback: bool
    reason: str


@dataclass
class LearnedRun:
    """A learned run the benchmark measured, with its selections and where its files are."""

    method: str
    run: Path
    gan_seed: int | None
    epochs: list[int]
    folders: dict[int, Path]
    config: dict[str, Any]
    rules: list[RuleChoice] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    score_columns: list[str] = field(default_factory=list)
    current: dict[str, Any] | None = None
    plot: str | None = None
    samples: list[tuple[int, str]] = field(default_factory=list)
    mlflow_run_id: str | None = None
    mlflow_url: str | None = None

    @property
    def title(self) -> str:
        seed = "" if self.gan_seed is None else f" (GAN seed {self.gan_seed})"
        return f"{self.method} {self.run.name}{seed}"


def _check_owned(out: Path) -> None:
    """Refuse an output folder whose ``files/`` or page the report did not write (no marker): pruning ``files/``
    would delete someone else's files."""
    marker = out / FILES / MARKER
    if marker.is_file():
        return
    for theirs in (out / FILES, out / PAGE):
        if theirs.exists() or theirs.is_symlink():
            raise StainshiftError(f"{theirs}: not written by stainshift report (no {FILES}/{MARKER}), so the report "
                                  f"would overwrite or delete it; choose another --out")


class _Files:
    """The report's image files: written under ``out/files``, linked relative to the page. Writes the marker that
    says the report owns the folder first (call :func:`_check_owned` before)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        marker = out / FILES / MARKER
        atomic_write_text(marker, MARKER_TEXT)
        self.written: set[Path] = {marker}

    def copy(self, source: Path, name: str) -> str:
        target = self.out / FILES / name
        atomic_write_bytes(target, source.read_bytes())
        self.written.add(target)
        return target.relative_to(self.out).as_posix()

    def image(self, image: np.ndarray, name: str) -> str:
        import cv2

        from stainshift.data.io import write_image

        side = max(image.shape[:2])
        if side > CELL_PX:
            scale = CELL_PX / side
            image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                               interpolation=cv2.INTER_AREA)
        target = write_image(self.out / FILES / name, np.ascontiguousarray(image))
        self.written.add(target)
        return target.relative_to(self.out).as_posix()

    def remove_stale(self) -> None:
        """Delete files an earlier report left under ``files/`` that this page does not show (only in a folder that
        holds the report's marker)."""
        root = self.out / FILES
        if not (root / MARKER).is_file():
            raise StainshiftError(f"{root}: no {MARKER} in it; not pruning a folder the report does not own")
        for path in sorted(root.rglob("*"), reverse=True):
            if path.is_file() and path not in self.written:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


# -- reading the benchmark ----------------------------------------------------------------------------------------
def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _benchmark_command(src: str, dst: str, made: dict[str, Any] | None) -> str:
    command = (made or {}).get("command") or ""
    return command if command.startswith("stainshift ") else f"stainshift benchmark --src {src} --dst {dst}"


def _kind(method: str, condition: str) -> str:
    if method == "original":
        return "original"
    if method in names(Kind.CLASSICAL, images_only=True):
        return "classical"
    if method.startswith("augment-"):
        return "augment"
    if method == "finetuned":
        return "upper"
    return "selected" if "selected (" in condition else "learned"


def _table_rows(rows: list[dict[str, str]], with_classifier: bool) -> list[TableRow]:
    out = []
    for row in rows:
        out.append(TableRow(
            classifier=row.get("classifier") if with_classifier else None, condition=row["condition"],
            kind=_kind(row.get("method", ""), row["condition"]),
            numbers={c: _number(row, c) for c in NUMBER_FORMATS},
            verdicts={r: row.get(f"vs_{r}", "") for r, _ in REFERENCES},
            gap_in_noise=row.get("gap_in_noise") == "True", epoch=_seed(row.get("epoch")),
            method=row.get("method", ""), gan_seed=_seed(row.get("gan_seed"))))
    return out


def _request(src: str, dst: str, options: dict[str, Any]):
    """The benchmark's request, rebuilt from its provenance (to find the runs it measured the same way)."""
    from stainshift.benchmark import BenchmarkRequest

    known = {f.name for f in dataclasses.fields(BenchmarkRequest)} - {"src", "dst"}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items() if k in known}
    return BenchmarkRequest(src, dst, **kwargs)


def _learned_runs(project: Project, src: str, dst: str, request, table: list[TableRow], rerun: str
                  ) -> list[LearnedRun]:
    """The learned runs of the benchmark, each checked to be the run the table measured (its images are there,
    made from the same epoch files)."""
    from stainshift.benchmark import condition_label, learned_runs

    labels = {r.condition for r in table}
    with warnings.catch_warnings():  # a missing GAN seed was reported by the benchmark itself
        warnings.simplefilter("ignore")
        found = learned_runs(project, request)
    out = []
    for method, by_seed in found.items():
        for gan_seed, run in by_seed.items():
            folders = {}
            for epoch in runs.kept_epochs(run):
                folder = runs.benchmark_images(project, src, dst, runs.learned_condition(run, src, dst, epoch))
                made_by = folder / "made_by.json"
                if condition_label(method, gan_seed, f"e{epoch}") not in labels or not made_by.is_file():
                    raise StainshiftError(f"{run}: epoch {epoch} is not in the benchmark (trained after it?); "
                                          f"rerun `{rerun}` first")
                if json.loads(made_by.read_text()).get("checkpoint") != file_hash(runs.epoch_file(run, epoch)):
                    raise StainshiftError(f"{runs.epoch_file(run, epoch)} changed after the benchmark measured it; "
                                          f"rerun `{rerun}` first")
                folders[epoch] = folder
            out.append(LearnedRun(method, run, gan_seed, sorted(folders), folders, runs.read_config(run)))
    return out


# -- selections and mlflow ----------------------------------------------------------------------------------------
def _mlflow_link(tracking_uri: str, run_id: str) -> str:
    """Where the run opens in the mlflow UI: the tracking server itself, else a local ``mlflow ui``."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/runs/{run_id}"


def _selections(project: Project, src: str, dst: str, learned: LearnedRun, request, table: list[TableRow],
                files: _Files) -> None:
    """The benchmark's pick per rule (its selection classifier's records), the scores behind them, the selection
    plot, the training samples and the mlflow run."""
    from stainshift.benchmark import RULES, condition_label, selection_classifier_name

    run = learned.run
    selector = runs.classifier_dir(project, selection_classifier_name(request)) / runs.MODEL_FILE
    by_label = {r.condition: r for r in table}
    scores: dict[int, dict[str, Any]] = {}
    for rule in RULES:
        path = runs.selection_file(run, rule, str(selector), src)
        record = json.loads(path.read_text()) if path.is_file() else {}
        picked = by_label.get(condition_label(learned.method, learned.gan_seed, f"selected ({rule})"))
        learned.rules.append(RuleChoice(
            rule=rule, epoch=record.get("epoch"), table_epoch=picked.epoch if picked else None,
            classifier=Path(record["classifier"]).parent.name if record.get("classifier") else "",
            created=record.get("created", ""), primary=record.get("primary") or "",
            fallback=bool(record.get("fallback")),
            reason=record.get("reason") or f"no record {path.name}; rerun the benchmark"))
        for s in record.get("scores", []):
            scores.setdefault(int(s["epoch"]), dict(s))
    for choice in learned.rules:
        if choice.epoch is not None and int(choice.epoch) in scores:
            scores[int(choice.epoch)].setdefault("chosen_by", []).append(choice.rule)
    learned.scores = [scores[e] for e in sorted(scores)]
    present = {k for s in learned.scores for k, v in s.items() if v is not None}
    learned.score_columns = [c for c in SCORE_COLUMNS if c in present]
    learned.current = runs.selection_record(run, None, src)
    slug = _slug(f"{learned.method}-{run.name}")
    plot = runs.selection_plot(run, src)
    learned.plot = files.copy(plot, f"plots/selection_{slug}.png") if plot.is_file() else None
    for epoch in learned.epochs:
        sample = runs.samples_file(run, epoch)
        if sample.is_file():
            learned.samples.append((epoch, files.copy(sample, f"samples/{slug}/epoch_{epoch:03d}.png")))
    learned.mlflow_run_id = learned.config.get("mlflow_run_id")
    if learned.mlflow_run_id:
        learned.mlflow_url = _mlflow_link(project.tracking_uri, learned.mlflow_run_id)


def _score_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return "–" if value is None else str(value)


# -- image grid ---------------------------------------------------------------------------------------------------
def _grid(project: Project, src: str, dst: str, table: list[TableRow], accuracy: dict[str, Number],
          learned: list[LearnedRun], files: _Files, per_class: int, rerun: str
          ) -> tuple[list[tuple[str, str]], list[GridColumn]]:
    """The same source test cells under every condition that has images (one column each), then target cells."""
    from stainshift.benchmark import condition_label
    from stainshift.data.domains import class_names
    from stainshift.grids import first_test_cells, harmonized_row

    cells = first_test_cells(project, src, per_class, classes=class_names(project.domain(src)))
    rows = [(s.label, Path(s.key).name) for s in cells]
    folders: dict[str, Path | None] = {}
    badges: dict[str, list[str]] = {}
    for r in table:
        if r.kind == "original":
            folders[r.condition] = None
        elif r.kind == "classical":
            folder = runs.benchmark_images(project, src, dst, r.method)
            if not (folder / "manifest.csv").is_file():
                raise StainshiftError(f"{folder}: the benchmark's {r.method} images are missing; rerun `{rerun}`")
            folders[r.condition] = folder
    hindsight = set()
    for lr in learned:
        kept = [condition_label(lr.method, lr.gan_seed, f"e{epoch}") for epoch in lr.epochs]
        for epoch, label in zip(lr.epochs, kept, strict=True):
            folders[label] = lr.folders[epoch]
            badges[label] = [c.rule for c in lr.rules if c.table_epoch == epoch]
        scored = [label for label in kept if label in accuracy and accuracy[label].raw]
        if scored:
            hindsight.add(max(scored, key=lambda label: float(accuracy[label].raw)))
    columns = []
    for i, (label, folder) in enumerate(folders.items()):
        images = harmonized_row(cells, folder)
        slug = f"{i:02d}-{_slug(label)}"
        shown = [files.image(im, f"cells/{slug}/{j:02d}-{_slug(s.label)}.png") for j, (im, s) in
                 enumerate(zip(images, cells, strict=True))]
        kind = next(r.kind for r in table if r.condition == label)
        columns.append(GridColumn(label, kind, accuracy[label].shown if label in accuracy else "–",
                                  badges.get(label, []), list(shown),
                                  "best on test (hindsight)" if label in hindsight else ""))
    target: dict[str, list] = {}
    for s in first_test_cells(project, dst, per_class):
        target.setdefault(s.label, []).append(s)
    shown_target: list[str | None] = []
    for j, s in enumerate(cells):  # the k-th cell of a class faces the k-th target cell of that class
        k = sum(1 for c in cells[:j] if c.label == s.label)
        other = target.get(s.label, [])
        shown_target.append(files.image(harmonized_row([other[k]])[0], f"cells/target/{j:02d}-{_slug(s.label)}.png")
                            if k < len(other) else None)
    columns.append(GridColumn(f"{dst} (target, other cells)", "target", "", [], shown_target))
    return rows, columns


# -- confusion matrices -------------------------------------------------------------------------------------------
def _confusions(project: Project, src: str, dst: str, request, table: list[TableRow], learned: list[LearnedRun],
                rerun: str) -> tuple[list[Confusion], list[str]]:
    """The first reported classifier's confusion on: the original images, the best classical method, each learned
    run's picks and its best kept epoch on test, the best stain augmentation, and the fine-tuned upper bound."""
    from stainshift.benchmark import CLASSIFIERS, condition_label
    from stainshift.classify.evaluate import evaluate
    from stainshift.classify.models import load_classifier
    from stainshift.classify.train import default_name, finetuned_name

    spec = request.classifiers[0]
    arch, loss = CLASSIFIERS[spec]
    base = default_name(dst, arch, loss, request.norm)
    rows = {r.condition: r for r in table if r.classifier == spec}
    acc = {c: _float(r.numbers["accuracy"].raw) or 0.0 for c, r in rows.items()}
    wanted: list[tuple[str, str, str, Path | None]] = []  # condition, note, classifier name, image folder

    def best(kind: str) -> str | None:
        found = [c for c, r in rows.items() if r.kind == kind]
        return max(found, key=lambda c: acc[c]) if found else None

    if "original" in rows:
        wanted.append(("original", "", base, None))
    classical = best("classical")
    if classical:
        wanted.append((classical, "best classical method", base, runs.benchmark_images(project, src, dst,
                                                                                         rows[classical].method)))
    for lr in learned:
        kept = {e: condition_label(lr.method, lr.gan_seed, f"e{e}") for e in lr.epochs}
        picks: dict[int, list[str]] = {}
        for c in lr.rules:
            if c.table_epoch in kept:
                picks.setdefault(c.table_epoch, []).append(c.rule)
        top = max(kept, key=lambda e: acc.get(kept[e], 0.0)) if kept else None
        for epoch, rules in picks.items():
            wanted.append((kept[epoch], f"selected ({', '.join(rules)})", base, lr.folders[epoch]))
        if top is not None and top not in picks:
            wanted.append((kept[top], "best kept epoch on test (hindsight, not selectable)", base, lr.folders[top]))
    augmented = best("augment")
    if augmented:
        kind = rows[augmented].method.removeprefix("augment-")
        wanted.append((augmented, "best stain augmentation", default_name(dst, arch, loss, request.norm,
                                                                          stain_augment=kind), None))
    upper = next((c for c, r in rows.items() if r.kind == "upper"), None)
    if upper:
        wanted.append((upper, "upper bound", finetuned_name(base, src), None))

    out, notes, loaded = [], [], {}
    for condition, note, name, folder in wanted:
        model = runs.classifier_dir(project, name) / runs.MODEL_FILE
        if not model.is_file():
            notes.append(f"{condition}: classifier {name} is gone, no confusion matrix; rerun `{rerun}`")
            continue
        if model not in loaded:
            loaded[model] = load_classifier(model)
        report = evaluate(loaded[model], project, src, "test", harmonized_root=folder, n_boot=0)
        counts = np.asarray(report.confusion, dtype=np.int64)
        totals = counts.sum(1, keepdims=True)
        shades = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
        agrees = abs(report.accuracy - acc[condition]) < 1e-9
        if not agrees:
            notes.append(f"{condition}: the confusion matrix's accuracy {report.accuracy:.3f} differs from the "
                         f"table's {acc[condition]:.3f} (the classifier or images changed after the benchmark); "
                         f"rerun `{rerun}`")
        out.append(Confusion(condition, note, f"{name} ({spec})", list(report.classes), counts.tolist(),
                             shades.round(3).tolist(), report.accuracy, acc[condition], agrees))
    return out, notes


# -- provenance ---------------------------------------------------------------------------------------------------
def _splits(project: Project, src: str, dst: str, made_with: dict[str, str] | None) -> list[dict[str, Any]]:
    """Each domain's saved split: file, hash (and whether the benchmark's images were made with it), counts."""
    out = []
    for domain in dict.fromkeys((src, dst)):
        path = runs.split_file(project, domain)
        if not path.is_file():
            out.append({"domain": domain, "file": str(path), "sha": None, "matches": None, "counts": {}, "total": 0})
            continue
        counts: dict[str, dict[str, int]] = {}
        for row in _read_csv(path):
            counts.setdefault(row["label"], {}).setdefault(row["split"], 0)
            counts[row["label"]][row["split"]] += 1
        sha = file_hash(path)
        recorded = (made_with or {}).get(domain)
        out.append({"domain": domain, "file": _relative(path, project.root), "sha": sha,
                    "matches": None if recorded is None else recorded == sha, "recorded": recorded,
                    "counts": counts, "total": sum(sum(c.values()) for c in counts.values())})
    return out


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _options(options: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, json.dumps(v) if isinstance(v, list | dict | bool) or v is None else str(v))
            for k, v in options.items()]


# -- the page -----------------------------------------------------------------------------------------------------
def _cards(rows: list[TableRow], learned: list[LearnedRun]) -> list[Card]:
    """The headline: original, best classical, each run's pick (one card per picked epoch), best stain augmentation,
    the upper bound."""
    from stainshift.benchmark import condition_label

    by_label = {r.condition: r for r in rows}

    def card(title: str, r: TableRow) -> Card:
        return Card(title, r.condition, r.numbers["accuracy"], r.numbers["ci_low"], r.numbers["ci_high"],
                    "" if r.kind == "original" else r.verdicts.get("original", ""), r.kind)

    def acc(r: TableRow) -> float:
        return _float(r.numbers["accuracy"].raw) or 0.0

    def best(kind: str) -> TableRow | None:
        found = [r for r in rows if r.kind == kind]
        return max(found, key=acc) if found else None

    out = [card("original images", r) for r in rows if r.kind == "original"]
    if classical := best("classical"):
        out.append(card("best classical", classical))
    for lr in learned:
        picks: dict[int, list[str]] = {}
        for c in lr.rules:
            if c.table_epoch is not None:
                picks.setdefault(c.table_epoch, []).append(c.rule)
        for epoch, rules in picks.items():
            row = by_label.get(condition_label(lr.method, lr.gan_seed, f"e{epoch}"))
            if row is not None:
                out.append(dataclasses.replace(card(f"selected ({', '.join(rules)})", row), kind="selected"))
    if augmented := best("augment"):
        out.append(card("best stain augmentation", augmented))
    out += [card("fine-tuned on source", r) for r in rows if r.kind == "upper"]
    return out


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("stainshift", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["score"] = _score_text
    return env


def build_report(project: Project, src: str, dst: str, out: str | Path | None = None, *, per_class: int = 2,
                 confusions: bool = True) -> Path:
    """Write the pair's report page (and its files) to ``out`` (default ``runs/<src>_to_<dst>/report``); returns
    the page's path. Fails with a one-line error naming the command to run when a piece is missing."""
    project.domain(src), project.domain(dst)
    if per_class < 1:
        raise StainshiftError(f"--per-class {per_class}: show at least 1 cell per class")
    bench = runs.benchmark_dir(project, src, dst)
    table_file = runs.benchmark_table(project, src, dst)
    if not table_file.is_file():
        raise StainshiftError(f"no benchmark for {src} -> {dst} yet ({table_file} is missing); run `stainshift "
                              f"benchmark --src {src} --dst {dst}` first")
    made_file = bench / "provenance.json"
    made = json.loads(made_file.read_text()) if made_file.is_file() else None
    rerun = _benchmark_command(src, dst, made)
    raw = _read_csv(table_file)
    missing = sorted({"classifier", "condition", "method", "accuracy"} - set(raw[0] if raw else {}))
    if not raw or missing:
        raise StainshiftError(f"{table_file}: {'no rows' if not raw else 'no column ' + ', '.join(missing)}; "
                              f"rerun `{rerun}`")
    out = Path(out) if out is not None else runs.report_dir(project, src, dst)
    if out.exists() and not out.is_dir():
        raise StainshiftError(f"{out}: exists and is not a folder; pass another --out")
    _check_owned(out)
    out.mkdir(parents=True, exist_ok=True)
    files = _Files(out)

    request = _request(src, dst, (made or {}).get("options", {}))
    table = _table_rows(raw, with_classifier=True)
    classifiers = list(dict.fromkeys(r.classifier for r in table))
    summary_file = bench / "summary.csv"
    summary = _table_rows(_read_csv(summary_file), with_classifier=False) if summary_file.is_file() else []
    headline = summary or [r for r in table if r.classifier == classifiers[0]]
    accuracy = {r.condition: r.numbers["accuracy"] for r in headline}
    seeds_file = bench / "seeds.csv"
    seeds = [{k: _score_text(_float(v)) if k.endswith(("mean", "sd", "min", "max")) else v for k, v in row.items()}
             for row in (_read_csv(seeds_file) if seeds_file.is_file() and seeds_file.stat().st_size > 1 else [])]
    if all(row.get("seeds") in ("1", "") for row in seeds):  # one GAN run per method: nothing spreads
        seeds = []

    learned = _learned_runs(project, src, dst, request, table, rerun)
    for lr in learned:
        _selections(project, src, dst, lr, request, table, files)
    notes = [f"{lr.title}: the {c.rule} rule's record picks epoch {c.epoch}, the table e{c.table_epoch}; rerun "
             f"`{rerun}`" for lr in learned for c in lr.rules if c.epoch is not None and c.epoch != c.table_epoch]
    plots = {name: files.copy(bench / f"{name}.png", f"plots/{name}.png")
             for name in ("accuracy_vs_epoch", "label_curve") if (bench / f"{name}.png").is_file()}
    grid_rows, grid = _grid(project, src, dst, headline, accuracy, learned, files, per_class, rerun)
    matrices: list[Confusion] = []
    if confusions and made is not None:
        matrices, more = _confusions(project, src, dst, request, table, learned, rerun)
        notes += more
    made_with = None
    for folder in sorted(runs.benchmark_images(project, src, dst).glob("*/made_by.json")):
        made_with = json.loads(folder.read_text()).get("splits")
        break
    n_images = raw[0].get("n", "")
    page = _environment().get_template("report.html").render(
        src=src, dst=dst, n_images=n_images, classifiers=classifiers, cards=_cards(headline, learned),
        table=table, summary=summary if len(classifiers) > 1 else [], references=REFERENCES, seeds=seeds,
        plots=plots, learned=learned, grid_rows=grid_rows, grid=grid, per_class=per_class,
        confusions=matrices, confusions_asked=confusions, notes=notes, made=made,
        options=_options((made or {}).get("options", {})), splits=_splits(project, src, dst, made_with),
        tracking_uri=project.tracking_uri, mlflow_ui=f"mlflow ui --backend-store-uri '{project.tracking_uri}'",
        bench=_relative(bench, project.root), project_file=str(project.file),
        generated=datetime.now(UTC).isoformat(timespec="seconds"), version=provenance.code_version())
    for note in notes:
        warnings.warn(note, stacklevel=2)
    atomic_write_text(out / PAGE, page)
    files.remove_stale()
    return out / PAGE

