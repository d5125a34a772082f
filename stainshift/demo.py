"""The synthetic two-hospital demo: simulate ``clinic`` and ``hgtp``, name them in a project, inspect and split them,
train a classifier on the clinic, measure how much it loses on the other hospital and how much each classical
normalizer wins back, all tracked in mlflow (sqlite).

Later capabilities (harmonization, epoch selection, the accuracy-before/after benchmark) extend this flow.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from stainshift.atomic import atomic_write_text
from stainshift.data.datasets import domain_dataset
from stainshift.data.inspect import DomainReport, inspect_domain
from stainshift.data.simulate import simulate
from stainshift.data.splits import domain_split
from stainshift.errors import StainshiftError
from stainshift.project import DomainConfig, Project, save_project
from stainshift.tracking import tracked_run

TARGET, SOURCE = "clinic", "hgtp"


@dataclass(frozen=True)
class DemoSettings:
    per_class: int
    size: int
    epochs: int
    seed: int = 0

    @classmethod
    def preset(cls, quick: bool, seed: int = 0) -> DemoSettings:
        return cls(per_class=30, size=96, epochs=8, seed=seed) if quick else cls(120, 96, 15, seed)


@dataclass
class DemoSummary:
    workdir: str
    settings: dict
    domains: dict[str, dict] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    harmonized: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_text(self) -> str:
        lines = [f"stainshift demo in {self.workdir}", "", "domains:"]
        for name, d in self.domains.items():
            lines.append(f"  {name:<7} {d['n_images']:>5} images  L*a*b* mean ({d['lab_mean']})  "
                         f"cell diameter {d['diameter_px']} px")
        acc_t, acc_s = self.accuracy[TARGET], self.accuracy[SOURCE]
        lines += ["", f"classifier trained on '{TARGET}' (train split), accuracy on each test split:",
                  f"  {TARGET:<7} {acc_t:6.3f}", f"  {SOURCE:<7} {acc_s:6.3f}   "
                  f"(stain shift costs {100 * (acc_t - acc_s):.1f} points)"]
        if self.harmonized:
            lines += ["", f"'{SOURCE}' test images harmonized to '{TARGET}' first (classical methods):"]
            lines += [f"  {m:<10} {a:6.3f}   ({100 * (a - acc_s):+.1f} points)" for m, a in self.harmonized.items()]
        lines += ["", "per-class accuracy (no harmonization):"]
        classes = list(self.per_class[TARGET])
        lines.append("  " + " " * 12 + "".join(f"{d:>9}" for d in (TARGET, SOURCE)))
        lines += ["  " + f"{c:<12}" + "".join(f"{self.per_class[d][c]:>9.2f}" for d in (TARGET, SOURCE))
                  for c in classes]
        lines += ["", f"done in {self.seconds:.0f} s; tracking: {self.settings['tracking_uri']}"]
        return "\n".join(lines)


def _domain_row(report: DomainReport) -> dict:
    diameter = report.diameter.get("median")
    return {"n_images": sum(report.counts.values()), "lab_mean": ", ".join(f"{v:.1f}" for v in report.lab_mean),
            "diameter_px": None if diameter is None else round(diameter, 1), "unreadable": len(report.unreadable)}


def _arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Load a whole (small) dataset as uint8 NHWC images and labels."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    x = np.stack([(img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for img in images])
    return x, np.asarray(labels)


def build_demo_project(workdir: Path, diameters: dict[str, float] | None = None) -> Project:
    """The demo's project file: the two simulated hospitals, scale harmonized to the clinic's cell size."""
    project = Project(file=(workdir / "stainshift.toml").resolve())
    for name in (TARGET, SOURCE):
        project = project.with_domain(DomainConfig(
            name=name, path=f"data/{name}", masks=f"data/{name}/masks", root=project.root,
            cell_diameter=(diameters or {}).get(name)))
    return project


def run_demo(workdir: str | Path = "stainshift-demo", quick: bool = False, progress: bool = True,
             seed: int = 0, settings: DemoSettings | None = None) -> DemoSummary:
    """Run the demo end to end in ``workdir``; returns (and writes ``summary.json``/``summary.md``) its summary.

    ``settings`` overrides the quick/full preset (the tests use a tiny one).
    """
    from stainshift.classify.baseline import per_class_accuracy, predict, train_baseline
    from stainshift.normalize import NORMALIZERS, DegenerateImageWarning, normalize_images
    from stainshift.normalize import build as build_normalizer

    start = time.perf_counter()
    workdir = Path(workdir).resolve()
    if workdir.exists() and not workdir.is_dir():
        raise StainshiftError(f"{workdir}: --workdir is a file; pass a folder (it is created if missing)")
    settings = settings or DemoSettings.preset(quick, seed)
    simulate(workdir / "data", hospitals=[TARGET, SOURCE], per_class=settings.per_class, size=settings.size,
             seed=seed, progress=progress)
    project = build_demo_project(workdir)
    reports = {name: inspect_domain(project, name, progress=progress) for name in (TARGET, SOURCE)}
    measured = {n: round(r.diameter["median"], 1) for n, r in reports.items() if r.diameter.get("median")}
    # scale harmonization: every domain is resized so its cells match the clinic's diameter
    project = replace(build_demo_project(workdir, measured), cell_diameter=measured.get(TARGET), seed=seed)
    save_project(project)
    for name in (TARGET, SOURCE):
        domain_split(project, name)

    train = domain_dataset(project, TARGET, "train", size=settings.size)
    classes = train.classes
    x_train, y_train = _arrays(train)
    summary = DemoSummary(workdir=str(workdir), settings={**asdict(settings), "tracking_uri": project.tracking_uri})
    summary.domains = {n: _domain_row(r) for n, r in reports.items()}
    params = {**asdict(settings), "classes": ",".join(classes), "train_images": len(y_train)}
    with tracked_run(project, "demo", f"baseline-{TARGET}", params, tags={"stainshift.step": "demo"}) as mlflow:
        model = train_baseline(x_train, y_train, epochs=settings.epochs, seed=seed, class_names=classes,
                               progress=progress)
        tests = {n: _arrays(domain_dataset(project, n, "test", size=settings.size, classes=classes))
                 for n in (TARGET, SOURCE)}
        for name, (x_test, y_test) in tests.items():
            predicted = predict(model, x_test)
            summary.accuracy[name] = float((predicted == y_test).mean())
            per_class = per_class_accuracy(predicted, y_test, len(classes))
            summary.per_class[name] = {c: round(float(a), 3) for c, a in zip(classes, per_class, strict=True)}
            mlflow.log_metric(f"accuracy_{name}", summary.accuracy[name])
        mlflow.log_metric("accuracy_drop", summary.accuracy[TARGET] - summary.accuracy[SOURCE])
        x_source, y_source = tests[SOURCE]
        for method in NORMALIZERS:
            normalizer = build_normalizer(method).fit(list(x_train))
            with warnings.catch_warnings():  # lone cells on plasma may trigger the normalizers' documented fallbacks
                warnings.simplefilter("ignore", DegenerateImageWarning)
                x_harmonized = np.stack(normalize_images(normalizer, list(x_source)))
            summary.harmonized[method] = float((predict(model, x_harmonized) == y_source).mean())
            mlflow.log_metric(f"accuracy_{SOURCE}_{method}", summary.harmonized[method])
        summary.seconds = time.perf_counter() - start
        atomic_write_text(workdir / "summary.json", json.dumps(asdict(summary), indent=2))
        atomic_write_text(workdir / "summary.md", "```\n" + summary.to_text() + "\n```\n")
        mlflow.log_artifact(str(workdir / "summary.md"))
    return summary
