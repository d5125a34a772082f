"""Real cross-hospital results: classifiers trained on PBC (Barcelona), tested on three other sites' cells.

Target: pbc (pbc_barcelona). Sources: jtsc (jtsc_tecom, rapid stain, the strongest shift), bccd (BCCD crops),
cvblog (cellavision_blog), bccdf (the BCCD cells through their whole fields, each located and framed:
``python benchmarks/bccd_fields.py`` first makes the domain's folder of links).
The 4 classes all sites share; every domain split 40/20/40 (train: GAN training and the
fine-tuned upper bound; val: epoch selection and the fine-tuned bound's epoch; test: reported), all at the common
cell diameter of 64 px (``benchmarks/real_sites.toml``). The exact commands, run from the repository root on a
clean tree with ``OMP_NUM_THREADS=1``::

    P=benchmarks/real_sites.toml
    for s in 0 1 2; do for src in jtsc cvblog bccd bccdf; do
      stainshift train cyclegan --project $P --src $src --dst pbc --preset cpu --epochs 5 --seed $s --run-id cpu-s$s
    done; done
    python benchmarks/cross_site.py --seeds 0,1,2 --classifiers resnet18,resnet34-focal [--sources jtsc]
    #  = stainshift benchmark --src S --dst pbc --seeds 0,1,2 for each source (classifiers, the selection
    #    classifier, the stain-augmentation competitors and the fine-tuned bounds are trained there, or reused
    #    when made the same way) into cross_site_parts/; sources can run as separate processes
    python benchmarks/cross_site.py --from-csv     # combines the sources measured into the tables and pictures

It refuses a tree with uncommitted changes (``--allow-dirty`` to override). Writes ``benchmarks/results/``
``cross_site.md``, ``cross_site.csv`` (every classifier and condition), ``cross_site_summary.csv`` (mean over
classifiers), ``cross_site_seeds.csv``, ``cross_site.json`` (provenance, read at the start),
``cross_site_selection/`` (every run's per-epoch selection scores), ``cross_site_accuracy_vs_epoch.png`` and
``cross_site_grid.jpg`` and ``cross_site_detail.jpg`` (one cell per source at about its own resolution).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stainshift import runs
from stainshift.benchmark import (
    CLASSIFIERS,
    BenchmarkRequest,
    curve_lines,
    markdown_table,
    plot_accuracy_vs_epoch,
    plot_label_curve,
    run_benchmark,
    seed_lines,
)
from stainshift.data.io import write_image
from stainshift.grids import centre_crop, first_test_cells, harmonized_row, image_grid
from stainshift.project import load_project
from stainshift.provenance import record, require_clean

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET = "pbc"
SOURCES = {"jtsc": "jtsc_tecom", "bccd": "bccd crops", "cvblog": "cellavision_blog",
           "bccdf": "bccd whole fields, cells located"}


def _markdown(summary: pd.DataFrame, seeds: pd.DataFrame, table: pd.DataFrame, meta: dict) -> str:
    m = meta["machine"]
    lines = ["# Cross-site benchmark: classifiers trained on PBC, tested on other hospitals", ""]
    for source, p in meta.get("sources", {}).items():
        lines.append(f"- {source}: started {p['started']}, commit {p['commit']}"
                     f"{' (DIRTY TREE)' if p['dirty'] else ''}, {p['seconds']:.0f} s, command `{p['command']}`")
    lines += [f"- machine: {m['cpu']}, {m['cores']} cores, CPU only (no GPU was lent to this task), torch threads "
             f"{m['torch_threads']}",
             f"- classifiers reported: {meta['options']['classifiers']} (GroupNorm ResNets from scratch, "
             "96 px inputs at the common 64 px cell diameter, 10 one-cycle epochs on PBC's train split)",
             "- epochs are chosen by a separate selection classifier (resnet18, seed 1), never reported; CycleGAN: "
             "`cpu` preset, 5 epochs, every epoch kept, one run per GAN seed",
             "- competitors: Reinhard, Macenko, histogram matching; the same classifiers trained on PBC with HED "
             "jitter or with L*a*b* statistics jitter (RandStainNA-like), on the original images",
             "- fine-tuned upper bound: each PBC classifier fine-tuned 5 epochs on the source's train split, at its "
             "best epoch on the source's validation split",
             "- paired bootstrap (2000 resamples of each source's test images, shared by every row); better/worse "
             "only when the paired 95% CI excludes 0; gap closed in the summaries = ratio of the means", "",
             "Commands: see the docstring of `benchmarks/cross_site.py`.", ""]
    for source in dict.fromkeys(summary.source):
        part = summary[summary.source == source]
        lines += [f"## {source} ({SOURCES[source]}) -> pbc: mean of the classifiers "
                  f"({int(part.n.iloc[0])} test images)", "", *markdown_table(part, "condition"), ""]
        spread = seeds[seeds.source == source] if len(seeds) else seeds
        if len(spread):
            lines += ["Across GAN seeds:", "", *seed_lines(spread), ""]
        if _part(source, "curve").exists():
            curve = pd.read_csv(_part(source, "curve"))
            request = BenchmarkRequest(source, TARGET, classifiers=("resnet18",), shot_draws=int(curve.draws.max()))
            picture = f"cross_site_label_curve_{source}.png"
            table_lines = curve_lines(curve, request, picture)
            table_lines[0] = "#" + table_lines[0]  # a subsection of the source's section
            lines += [*table_lines, ""]
    lines += ["## Every classifier", ""]
    for source in dict.fromkeys(table.source):
        lines += [f"### {source}", "", *markdown_table(table[table.source == source], "classifier"), ""]
    lines += ["![accuracy vs epoch](cross_site_accuracy_vs_epoch.png)", "", "![before/after](cross_site_grid.jpg)", "",
              "Each source's first test neutrophil at about its own resolution (the central 1.3 cell diameters, "
              "in the source's pixels):", "", "![detail](cross_site_detail.jpg)", ""]
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(dict.fromkeys(frame.source))
    fig, axes = plt.subplots(1, len(sources), figsize=(4.2 * len(sources), 3.8), sharey=True, squeeze=False)
    for ax, source in zip(axes[0], sources, strict=True):
        part = frame[frame.source == source]
        plot_accuracy_vs_epoch(ax, part, "cyclegan", ms=3, lw=1)
        reinhard = part[part.condition == "reinhard"].accuracy.mean()
        ax.axhline(reinhard, color="black", lw=2, alpha=0.4, label="reinhard (mean)")
        ax.set(title=f"{source} -> pbc", xlabel="CycleGAN epoch", ylim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy on the source's test split")
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.suptitle("dotted: original images, dashed: fine-tuned on the source (per classifier)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


GRID_METHODS = ("cyclegan", "cut", "colorization")
DETAIL_DIAMETERS = 1.3  # the detail grid's window, in cell diameters of the source's own images
DETAIL_CELL = 200       # px per window: about the windows' own size (cvblog, bccd, PBC), so nothing is downscaled much


def _methods(project, source: str) -> list[tuple[str, Path | None]]:
    """(label, harmonized folder) per row: the images as they came, Reinhard, and each learned method's seed-0 run at
    its labelled selection's epoch."""
    methods = [("original", None), ("reinhard", runs.benchmark_images(project, source, TARGET, "reinhard"))]
    for method in GRID_METHODS:
        run = runs.runs_by_seed(project, source.split("@")[0], TARGET, method, "cpu-").get(0)
        record = runs.selection_record(run, "labelled", source) if run is not None else None
        if record is not None:
            condition = runs.learned_condition(run, source, TARGET, record["epoch"])
            methods.append((f"{method} {run.name} e{record['epoch']}",
                            runs.benchmark_images(project, source, TARGET, condition)))
    return methods


def grid(project, frame: pd.DataFrame, path: Path) -> None:
    """Per source: one test cell per class as it came, after Reinhard, after the selected CycleGAN epoch and after
    colorization; then PBC cells of the same classes."""
    rows, labels = [], []
    classes = list(project.domain(TARGET).classes)
    for source in dict.fromkeys(frame.source):
        picked = first_test_cells(project, source, 1, classes)
        for label, folder in _methods(project, source):
            rows.append(harmonized_row(picked, folder))
            labels.append(f"{source} {label}")
    rows.append(harmonized_row(first_test_cells(project, TARGET, 1, classes)))
    labels.append("pbc (target)")
    write_image(path, image_grid(rows, cell=160, row_labels=labels, label_width=150))  # near the cells' own size


def detail_grid(project, frame: pd.DataFrame, path: Path) -> None:
    """Per source, its first test neutrophil at (about) its own resolution: the central 1.3 cell diameters of the
    original and of each method's harmonized image, so granules and chromatin can be compared."""
    from stainshift.data.scale import domain_diameter

    def side(domain: str) -> int:
        diameter = domain_diameter(project, domain) or project.cell_diameter or 64.0
        return round(DETAIL_DIAMETERS * diameter)

    columns = ["original", "reinhard", *GRID_METHODS]
    rows, labels = [], []
    for source in dict.fromkeys(frame.source):
        (cell,) = first_test_cells(project, source, 1, ["neutrophil"])
        found = {label.split()[0]: harmonized_row([cell], folder)[0] for label, folder in _methods(project, source)}
        rows.append([centre_crop(found[c], side(source)) if c in found else None for c in columns])
        labels.append(f"{source} ({side(source)} px)")
    (cell,) = first_test_cells(project, TARGET, 1, ["neutrophil"])
    rows.append([centre_crop(harmonized_row([cell])[0], side(TARGET))])
    labels.append(f"pbc target ({side(TARGET)} px)")
    write_image(path, image_grid(rows, cell=DETAIL_CELL, row_labels=labels, label_width=170, col_labels=columns))


PARTS = ("table", "summary", "seeds")


def _part(source: str, part: str) -> Path:
    return RESULTS / "cross_site_parts" / f"{source}_{part}.csv"


def _label(source: str, tag: str | None) -> str:
    """A source's name in the parts: ``jtsc``, or ``jtsc@stable`` for a tagged training variant."""
    return f"{source}@{tag}" if tag else source


def benchmark_source(project, source: str, args: argparse.Namespace) -> None:
    """One source's benchmark; its tables and provenance go to cross_site_parts/ (sources can run in parallel)."""
    meta = record(vars(args))  # before the work
    start = time.perf_counter()
    label = _label(source, args.tag)
    request = BenchmarkRequest(source, TARGET, classifiers=tuple(args.classifiers.split(",")), norm="group",
                               size=96, epochs=10, finetune_epochs=5, seed=0,
                               gan_seeds=tuple(int(s) for s in args.seeds.split(",")), run_prefix=args.run_prefix,
                               shots=tuple(int(k) for k in args.shots.split(",")) if args.shots else (),
                               shot_draws=args.shot_draws, progress=not args.quiet)
    result = run_benchmark(project, request, argv=sys.argv)
    _part(label, "table").parent.mkdir(parents=True, exist_ok=True)
    for part, frame in zip(PARTS, (result.table, result.summary, result.seeds), strict=True):
        frame.assign(source=label).to_csv(_part(label, part), index=False)
    if result.curve is not None:
        result.curve.assign(source=label).to_csv(_part(label, "curve"), index=False)
    selection_dir = RESULTS / "cross_site_selection"
    selection_dir.mkdir(exist_ok=True)
    for scores in runs.benchmark_dir(project, source, TARGET).glob(f"selection_*{args.run_prefix or ''}*.csv"):
        shutil.copyfile(scores, selection_dir / f"{source}_{scores.name}")
    meta["seconds"] = time.perf_counter() - start
    _part(label, "provenance").with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str))
    print(f"{source}: done after {meta['seconds']:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=str(HERE / "real_sites.toml"))
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--classifiers", default=",".join(CLASSIFIERS))
    parser.add_argument("--seeds", default="0,1,2", help="GAN seeds (one CycleGAN run per seed and source)")
    parser.add_argument("--run-prefix", default="cpu-",
                        help="benchmark the runs whose id starts so (default cpu-: the `cpu` preset runs cpu-sN)")
    parser.add_argument("--tag", help="name the parts <source>@<tag> (a training variant; see stable_translation.py)")
    parser.add_argument("--shots", help="label curve, e.g. 0,10,25,50,100 (see `stainshift benchmark --shots`)")
    parser.add_argument("--shot-draws", type=int, default=3)
    parser.add_argument("--allow-dirty", action="store_true", help="measure on a tree with uncommitted changes")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--from-csv", action="store_true",
                        help="only combine the sources already measured (cross_site_parts/) into the tables and "
                             "pictures")
    args = parser.parse_args()
    project = load_project(args.project)
    RESULTS.mkdir(exist_ok=True)
    sources = args.sources.split(",")
    if not args.from_csv:  # measure; the combined tables are written by --from-csv, so that sources measured in
        require_clean(args.allow_dirty, "benchmarks/cross_site.py")  # parallel never see a tree made dirty by
        for source in sources:                                           # another's results
            benchmark_source(project, source, args)
        return
    sources = [s for s in SOURCES if _part(s, "table").exists()]
    table, summary, seeds = (pd.concat([pd.read_csv(_part(s, part)) for s in sources], ignore_index=True)
                             for part in PARTS)
    provenance = {s: json.loads(_part(s, "provenance").with_suffix(".json").read_text()) for s in sources}
    meta = {**provenance[sources[0]], "sources": provenance, "seconds": sum(p["seconds"] for p in provenance.values())}
    table.to_csv(RESULTS / "cross_site.csv", index=False)
    summary.to_csv(RESULTS / "cross_site_summary.csv", index=False)
    seeds.to_csv(RESULTS / "cross_site_seeds.csv", index=False)
    (RESULTS / "cross_site.json").write_text(json.dumps(meta, indent=2, default=str))
    plot(table, RESULTS / "cross_site_accuracy_vs_epoch.png")
    for source in sources:
        if _part(source, "curve").exists():
            plot_label_curve(pd.read_csv(_part(source, "curve")), source, TARGET,
                             RESULTS / f"cross_site_label_curve_{source}.png")
    grid(project, table, RESULTS / "cross_site_grid.jpg")
    detail_grid(project, table, RESULTS / "cross_site_detail.jpg")
    (RESULTS / "cross_site.md").write_text(_markdown(summary, seeds, table, meta))
    print(summary[["source", "condition", "accuracy", "ci_low", "ci_high", "vs_classical", "vs_augment",
                   "gap_closed"]].round(3).to_string())


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
