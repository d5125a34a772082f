"""The synthetic two-hospital demo, the whole stainshift flow on simulated data with local sqlite tracking.

1. simulate two hospitals (``clinic``, the target; ``hgtp``, a strongly shifted source), name them in a project,
   inspect them (measured cell diameters set the common scale) and split them;
2. run the recipe ``pipelines/paper_blocks_1_2.toml`` (:mod:`stainshift.pipeline`) on them with the demo's sizes,
   leaving out its colorization step: a short CycleGAN hgtp -> clinic (the ``demo`` preset, every epoch kept);
   ``stainshift benchmark``: a GroupNorm ResNet18 trained on the clinic, evaluated on hgtp's test split for the
   original images, the three classical methods and every kept CycleGAN epoch, the epoch selected under both rules,
   the classifier fine-tuned on hgtp as the upper bound; ``harmonize`` with the selected epoch (``--epoch best``);
   ``report``, the benchmark's HTML page;
3. draw a before/after grid and summarise.

Everything lands in ``workdir`` (data, ``stainshift.toml``, ``runs/``) and in the ``demo`` mlflow experiment.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from stainshift import runs
from stainshift.atomic import atomic_write_text
from stainshift.data.inspect import DomainReport, inspect_domain
from stainshift.data.simulate import simulate
from stainshift.data.splits import domain_split
from stainshift.errors import StainshiftError
from stainshift.project import DomainConfig, Project, save_project
from stainshift.tracking import tracked_run

TARGET, SOURCE = "clinic", "hgtp"
CLASSIFIER = "resnet18"
RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "paper_blocks_1_2.toml"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run; ``preset`` gives the full and ``--quick`` ones (the tests pass tinier ones)."""

    per_class: int             # simulated images per class and hospital (6 classes)
    size: int = 96             # simulated image side, px
    classifier_size: int = 64  # classifier input (centre crop after scale harmonization), px
    classifier_epochs: int = 10
    finetune_epochs: int = 5
    gan_epochs: int = 5
    gan_options: tuple[tuple[str, object], ...] = ()  # overrides of the CycleGAN `demo` preset
    gan_balanced: bool = False  # class-balanced unpaired sampling (both hospitals are labelled)
    seed: int = 0

    @classmethod
    def preset(cls, quick: bool, seed: int = 0) -> DemoSettings:
        # sized on this 2-core machine (benchmarks/results/demo.md): quick < 2 min, full < 10 min
        if quick:
            return cls(per_class=20, classifier_epochs=6, finetune_epochs=3, gan_epochs=3,
                       gan_options=(("crop_size", 48),), seed=seed)
        return cls(per_class=60, seed=seed)


@dataclass
class DemoSummary:
    workdir: str
    settings: dict
    domains: dict[str, dict] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)   # the clinic classifier on each test split
    table: list[dict] = field(default_factory=list)            # the benchmark rows (hgtp test split)
    selected: dict[str, int] = field(default_factory=dict)     # rule -> CycleGAN epoch
    files: dict[str, str] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_text(self) -> str:
        lines = [f"stainshift demo in {self.workdir}", "", "domains:"]
        for name, d in self.domains.items():
            lines.append(f"  {name:<7} {d['n_images']:>5} images  L*a*b* mean ({d['lab_mean']})  "
                         f"cell diameter {d['diameter_px']} px")
        acc_t, acc_s = self.accuracy[TARGET], self.accuracy[SOURCE]
        lines += ["", f"{CLASSIFIER} (GroupNorm) trained on '{TARGET}', accuracy on each test split:",
                  f"  {TARGET:<7} {acc_t:6.3f}", f"  {SOURCE:<7} {acc_s:6.3f}   "
                  f"(stain shift costs {100 * (acc_t - acc_s):.1f} points)",
                  "", f"'{SOURCE}' test images harmonized to '{TARGET}' first:",
                  f"  {'condition':<36} {'accuracy (95% CI)':<22} {'macro-F1':>8} {'gap closed':>11}   "
                  "paired vs original / best classical / best stain augmentation"]
        for t in self.table:
            ci = f"{t['accuracy']:.3f} ({t['ci_low']:.2f}-{t['ci_high']:.2f})"
            gap = "" if t["gap_closed"] != t["gap_closed"] else f"{t['gap_closed']:.0%}"
            verdicts = " / ".join(str(t.get(f"vs_{k}", "")) for k in ("original", "classical", "augment"))
            lines.append(f"  {t['condition']:<36} {ci:<22} {t['macro_f1']:>8.3f} {gap:>11}   {verdicts}")
        chosen = ", ".join(f"{e} ({rule} rule)" for rule, e in self.selected.items())
        lines += ["", f"selected CycleGAN epoch: {chosen}", "", "files:"]
        lines += [f"  {k:<14} {v}" for k, v in self.files.items()]
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in self.stage_seconds.items())
        lines += ["", f"done in {self.seconds:.0f} s ({stages}); tracking: {self.settings['tracking_uri']}"]
        return "\n".join(lines)


def _domain_row(report: DomainReport) -> dict:
    diameter = report.diameter.get("median")
    return {"n_images": sum(report.counts.values()), "lab_mean": ", ".join(f"{v:.1f}" for v in report.lab_mean),
            "diameter_px": None if diameter is None else round(diameter, 1), "unreadable": len(report.unreadable)}


def build_demo_project(workdir: Path, diameters: dict[str, float] | None = None) -> Project:
    """The demo's project file: the two simulated hospitals, scale harmonized to the clinic's cell size."""
    project = Project(file=(workdir / "stainshift.toml").resolve())
    for name in (TARGET, SOURCE):
        project = project.with_domain(DomainConfig(
            name=name, path=f"data/{name}", masks=f"data/{name}/masks", root=project.root,
            cell_diameter=(diameters or {}).get(name)))
    return project


def _before_after(project: Project, harmonized: Path, out: Path, per_class: int = 2) -> Path:
    """Rows of hgtp test cells as they came, after Reinhard and after the selected CycleGAN epoch, then clinic cells."""
    from stainshift.data.io import write_image
    from stainshift.grids import first_test_cells, harmonized_row, image_grid

    source = first_test_cells(project, SOURCE, per_class)
    reinhard = runs.benchmark_images(project, SOURCE, TARGET, "reinhard")
    rows = [harmonized_row(source), harmonized_row(source, reinhard), harmonized_row(source, harmonized),
            harmonized_row(first_test_cells(project, TARGET, per_class))[: len(source)]]
    labels = [f"{SOURCE} original", "reinhard", "cyclegan best", f"{TARGET} target"]
    return write_image(out, image_grid(rows, cell=96, row_labels=labels))


def recipe_variables(settings: DemoSettings) -> dict[str, str]:
    """The values the demo gives the recipe's variables (the hospitals, the demo's GAN and classifier sizes)."""
    flags = [f"--set {k}={v}" for k, v in settings.gan_options] + ["--balanced"] * settings.gan_balanced
    return {"src": SOURCE, "dst": TARGET, "seed": str(settings.seed), "gan_preset": "demo",
            "gan_epochs": str(settings.gan_epochs), "gan_keep": ",".join(map(str, range(1, settings.gan_epochs + 1))),
            "gan_flags": " ".join(flags), "classifiers": CLASSIFIER, "size": str(settings.classifier_size),
            "classifier_epochs": str(settings.classifier_epochs), "finetune_epochs": str(settings.finetune_epochs),
            "selection_seed": str(settings.seed + 1)}


def run_demo(workdir: str | Path = "stainshift-demo", quick: bool = False, progress: bool = True,
             seed: int = 0, settings: DemoSettings | None = None) -> DemoSummary:
    """Run the demo end to end in ``workdir``; returns (and writes ``summary.json``/``summary.md``) its summary.

    ``settings`` overrides the quick/full preset (the tests use a tiny one).
    """
    import pandas as pd

    from stainshift.classify.evaluate import evaluate
    from stainshift.classify.train import default_name
    from stainshift.pipeline import load_recipe, run_pipeline

    start = time.perf_counter()
    stages: dict[str, float] = {}

    def lap(name: str) -> None:
        stages[name] = round(time.perf_counter() - start - sum(stages.values()), 1)

    workdir = Path(workdir).resolve()
    if workdir.exists() and not workdir.is_dir():
        raise StainshiftError(f"{workdir}: --workdir is a file; pass a folder (it is created if missing)")
    settings = settings or DemoSettings.preset(quick, seed)
    seed = settings.seed
    previous = workdir / "summary.json"
    if previous.exists():  # same settings: the data, splits and classifier are reused; other settings would clash
        before = {k: v for k, v in json.loads(previous.read_text())["settings"].items() if k != "tracking_uri"}
        before.setdefault("gan_balanced", False)  # summaries written before the setting existed
        if before != json.loads(json.dumps(asdict(settings))):
            raise StainshiftError(f"{workdir} holds a demo run with other settings ({before['per_class']} images per "
                                  "class); pass another --workdir, or delete that folder first")
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
    summary = DemoSummary(workdir=str(workdir), settings={**asdict(settings), "tracking_uri": project.tracking_uri})
    summary.domains = {n: _domain_row(r) for n, r in reports.items()}
    lap("data")

    if not RECIPE.is_file():
        raise StainshiftError(f"the demo runs {RECIPE.parent.name}/{RECIPE.name} from the stainshift source tree, "
                              f"which is not at {RECIPE.parent}; install stainshift from a checkout (bash setup.sh)")
    result = run_pipeline(load_recipe(RECIPE, recipe_variables(settings)), project, skip=("train-colorization",),
                          quiet=not progress)
    if not result.ok:
        failed = next(s for s in result.steps if s.action == "failed")
        raise StainshiftError(f"demo: step '{failed.name}' of {RECIPE.name} failed ({failed.why}); the message above "
                              "says why")
    stages.update({s.name: s.seconds for s in result.steps if s.seconds})
    run = runs.latest_run(project, SOURCE, TARGET, "cyclegan")
    bench = runs.benchmark_dir(project, SOURCE, TARGET)
    table = pd.read_csv(bench / "benchmark.csv")

    model = runs.classifier_dir(project, default_name(TARGET, CLASSIFIER, "ce", "group")) / runs.MODEL_FILE
    summary.accuracy[TARGET] = evaluate(model, project, TARGET, "test", seed=seed).accuracy
    summary.accuracy[SOURCE] = float(table[table.condition == "original"].accuracy.iloc[0])
    selection = json.loads(runs.selected_file(run).read_text())
    summary.selected = {row.condition.split("(")[1].rstrip(")"): int(row.epoch) for row in table.itertuples()
                        if row.condition.startswith("cyclegan selected")}
    harmonized = runs.harmonized_dir(project, SOURCE, TARGET, "cyclegan")
    grid = _before_after(project, harmonized, workdir / "before_after.png")
    summary.table = table.drop(columns=["classifier"]).to_dict("records")
    summary.files = {"project": str(project.file), "benchmark": str(bench / "benchmark.md"),
                     "plot": str(bench / "accuracy_vs_epoch.png"), "selection": str(runs.selection_plot(run)),
                     "harmonized": f"{harmonized} (epoch {selection['epoch']}, {selection['rule']} rule)",
                     "before/after": str(grid), "report": str(runs.report_dir(project, SOURCE, TARGET) / "index.html"),
                     "pipeline": str(result.state)}
    lap("summary")

    params = {**asdict(settings), "gan_run": run.name, "classifier": CLASSIFIER}
    params.pop("gan_options")
    with tracked_run(project, "demo", "demo", params, tags={"stainshift.step": "demo"}) as mlflow:
        for name, value in summary.accuracy.items():
            mlflow.log_metric(f"accuracy_{name}", value)
        mlflow.log_metric("accuracy_drop", summary.accuracy[TARGET] - summary.accuracy[SOURCE])
        for t in summary.table:
            key = t["condition"].replace(" ", "_").replace("(", "").replace(")", "")
            mlflow.log_metric(f"accuracy_{SOURCE}_{key}", t["accuracy"])
        summary.seconds = time.perf_counter() - start
        summary.stage_seconds = stages
        atomic_write_text(workdir / "summary.json", json.dumps(asdict(summary), indent=2))
        atomic_write_text(workdir / "summary.md", "```\n" + summary.to_text() + "\n```\n")
        for artifact in (workdir / "summary.md", bench / "benchmark.md", bench / "accuracy_vs_epoch.png", grid):
            mlflow.log_artifact(str(artifact))
    return summary
