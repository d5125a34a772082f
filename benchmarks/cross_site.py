"""Real cross-hospital results: classifiers trained on PBC (Barcelona), tested on three other sites' cells.

Target: pbc (pbc_barcelona). Sources: jtsc (jtsc_tecom, rapid stain, the strongest shift), bccd (BCCD crops),
cvblog (cellavision_blog). The 4 classes all sites share; every domain split 40/20/40 (train: GAN training and the
fine-tuned upper bound; val: epoch selection; test: reported), all at the common cell diameter of 64 px
(``benchmarks/real_sites.toml``). The exact commands, run from the repository root with ``OMP_NUM_THREADS=1``::

    P=benchmarks/real_sites.toml
    stainshift train cyclegan --project $P --src jtsc --dst pbc --preset cpu --epochs 5 --run-id cpu-s0
    #   (this one ran as 2 epochs, interrupted, then --resume --epochs 5: bit-identical to one go, see issue 3)
    stainshift train cyclegan --project $P --src bccd --dst pbc --preset cpu --epochs 5 --run-id cpu-s0
    stainshift train cyclegan --project $P --src cvblog --dst pbc --preset cpu --epochs 5 --run-id cpu-s0
    stainshift train colorization --project $P --src jtsc --dst pbc --preset cpu --epochs 2 --run-id cpu-s0
    for a in resnet18 resnet34; do for l in ce focal; do
      stainshift classify train --project $P --domain pbc --arch $a --loss $l --norm group --size 96 --epochs 10
    done; done
    python benchmarks/cross_site.py      # = stainshift benchmark --src S --dst pbc --norm group for each source,
                                         #   then the tables and plots below

The ColorizationGAN learns from PBC alone, so the one run (trained under jtsc_to_pbc) serves every source.
Writes ``benchmarks/results/cross_site.md`` / ``.csv``, ``cross_site_accuracy_vs_epoch.png`` and
``cross_site_grid.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from provenance import git_commit, machine

from stainshift import runs
from stainshift.benchmark import CLASSIFIERS, BenchmarkRequest, plot_accuracy_vs_epoch, run_benchmark
from stainshift.data.io import write_image
from stainshift.grids import first_test_cells, harmonized_row, image_grid
from stainshift.project import load_project

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET = "pbc"
SOURCES = {"jtsc": "jtsc_tecom", "bccd": "bccd crops", "cvblog": "cellavision_blog"}
SUMMARY = ("original", "reinhard", "macenko", "histogram", "cyclegan selected (labelled)",
           "cyclegan selected (label-free)", "colorization", "fine-tuned on source (upper bound)")


def _colorization_row(frame: pd.DataFrame) -> pd.Series:
    """The colorization row of the summary: its labelled-rule selection where the benchmark made one, else (tables
    from before every learned model got selection rows) its single epoch row."""
    selected = frame.condition == "colorization selected (labelled)"
    if selected.any():
        return selected
    return frame.condition.str.startswith("colorization e")


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean over the classifiers of accuracy, macro-F1 and gap closed, per source and condition."""
    color = _colorization_row(frame)
    frame = frame.assign(condition=frame.condition.where(~color, "colorization"))
    mean = frame.groupby(["source", "condition"], sort=False)[["accuracy", "macro_f1"]].mean().reset_index()
    out = []
    for _, group in mean.groupby("source", sort=False):
        original = group[group.condition == "original"].accuracy.iloc[0]
        upper = group[group.condition == SUMMARY[-1]].accuracy.iloc[0]
        out.append(group.assign(gap_closed=(group.accuracy - original) / (upper - original)))
    return pd.concat(out, ignore_index=True)


def _markdown(frame: pd.DataFrame, mean: pd.DataFrame, meta: dict) -> str:
    lines = ["# Cross-site benchmark: classifiers trained on PBC, tested on other hospitals", "",
             f"- date: {meta['date']}; commit: {meta['commit']}; machine: {meta['machine']['cpu']}, "
             f"{meta['machine']['cores']} cores, CPU only (no GPU was lent to this task), torch threads 1",
             f"- seconds for this script (benchmark stage, after the training commands): {meta['seconds']:.0f}",
             "- classifiers: GroupNorm ResNet18 / ResNet34, cross-entropy or focal loss (gamma 2), from scratch, "
             "96 px inputs at the common 64 px cell diameter, 10 one-cycle epochs on PBC's train split (640 images)",
             "- CycleGAN: `cpu` preset (ngf 32, 6 residual blocks, 96 px crops), 5 epochs, every epoch kept; "
             "ColorizationGAN: `cpu` preset, 2 epochs on PBC",
             "- fine-tuned upper bound: each PBC classifier fine-tuned 5 epochs on the source's train split",
             "- selection sees only the source's validation split; every number is on the source's TEST split",
             "- gap closed = (harmonized - original) / (fine-tuned - original)", "",
             "Commands: see the docstring of `benchmarks/cross_site.py`.", "",
             "## Summary (mean of the 4 classifiers)", ""]
    sources = list(dict.fromkeys(frame.source))
    header = "| condition | " + " | ".join(f"{s} acc | {s} gap | {s} F1" for s in sources) + " |"
    lines += [header, "|---|" + "---:|---:|---:|" * len(sources)]
    for condition in SUMMARY:
        cells = []
        for s in sources:
            row = mean[(mean.source == s) & (mean.condition == condition)]
            cells += ([f"{row.accuracy.iloc[0]:.3f}", f"{row.gap_closed.iloc[0]:.0%}", f"{row.macro_f1.iloc[0]:.3f}"]
                      if len(row) else ["", "", ""])
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    n_test = {s: int(frame[frame.source == s].n.iloc[0]) for s in sources}
    lines += ["", "Test images: " + ", ".join(f"{s} {n}" for s, n in n_test.items()), ""]
    for s in sources:
        part = frame[frame.source == s]
        lines += [f"## {s} ({SOURCES[s]}) -> pbc, every classifier", "",
                  "| condition | " + " | ".join(CLASSIFIERS) + " |", "|---|" + "---:|" * len(CLASSIFIERS)]
        for condition in dict.fromkeys(part.condition):
            rows = part[part.condition == condition].set_index("classifier")
            cells = [f"{rows.accuracy[c]:.3f} ({rows.ci_low[c]:.2f}-{rows.ci_high[c]:.2f})" if c in rows.index
                     else "" for c in CLASSIFIERS]
            lines.append(f"| {condition} | " + " | ".join(cells) + " |")
        selected = part[part.condition.str.startswith("cyclegan selected")]
        lines += ["", "Selected epochs: " + "; ".join(f"{r.classifier} {r.condition.split('(')[1][:-1]} e{r.epoch:g}"
                                                     for r in selected.itertuples()), ""]
    lines += ["![accuracy vs epoch](cross_site_accuracy_vs_epoch.png)", "", "![before/after](cross_site_grid.png)", ""]
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
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("dotted: original images, dashed: fine-tuned on the source (per classifier)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grid(project, frame: pd.DataFrame, path: Path) -> None:
    """Per source: one test cell per class as it came, after Reinhard, after the selected CycleGAN epoch and after
    colorization; then PBC cells of the same classes."""
    rows, labels = [], []
    classes = list(project.domain(TARGET).classes)
    for source in dict.fromkeys(frame.source):
        picked = first_test_cells(project, source, 1, classes)
        run = runs.serving_run(project, source, TARGET, "cyclegan")
        epoch = json.loads(runs.selected_file(run).read_text())["epoch"]
        images = runs.benchmark_images(project, source, TARGET)
        methods = [("original", None), ("reinhard", images / "reinhard"),
                   (f"cyclegan e{epoch}", runs.benchmark_images(project, source, TARGET,
                                                                runs.learned_condition(run, source, TARGET, epoch)))]
        methods += [("colorization", folder) for folder in sorted(images.glob("colorization_*"))[-1:]]
        for label, folder in methods:
            rows.append(harmonized_row(picked, folder))
            labels.append(f"{source} {label}")
    rows.append(harmonized_row(first_test_cells(project, TARGET, 1, classes)))
    labels.append("pbc (target)")
    write_image(path, image_grid(rows, cell=96, row_labels=labels, label_width=150))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=str(HERE / "real_sites.toml"))
    parser.add_argument("--sources", default=",".join(SOURCES))
    parser.add_argument("--classifiers", default=",".join(CLASSIFIERS))
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--from-csv", action="store_true",
                        help="rewrite the tables and pictures from the committed cross_site.csv / .json, no benchmark")
    args = parser.parse_args()
    project = load_project(args.project)
    RESULTS.mkdir(exist_ok=True)
    if args.from_csv:
        frame = pd.read_csv(RESULTS / "cross_site.csv")
        meta = json.loads((RESULTS / "cross_site.json").read_text())
    else:
        start = time.perf_counter()
        frames = []
        for source in args.sources.split(","):
            request = BenchmarkRequest(source, TARGET, classifiers=tuple(args.classifiers.split(",")), norm="group",
                                       size=96, epochs=10, finetune_epochs=5, seed=0, progress=not args.quiet)
            frames.append(run_benchmark(project, request).assign(source=source))
            print(f"{source}: done after {time.perf_counter() - start:.0f} s", flush=True)
        frame = pd.concat(frames, ignore_index=True)
        meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_commit(),
                "machine": machine(), "seconds": time.perf_counter() - start}
        frame.to_csv(RESULTS / "cross_site.csv", index=False)
        (RESULTS / "cross_site.json").write_text(json.dumps(meta, indent=2, default=str))
    mean = summarize(frame)
    mean.to_csv(RESULTS / "cross_site_summary.csv", index=False)
    plot(frame, RESULTS / "cross_site_accuracy_vs_epoch.png")
    grid(project, frame, RESULTS / "cross_site_grid.png")
    (RESULTS / "cross_site.md").write_text(_markdown(frame, mean, meta))
    print(mean.round(3).to_string())
    if args.from_csv:
        return


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
