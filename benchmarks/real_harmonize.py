"""Harmonize real jtsc_tecom images to pbc_barcelona's staining with every method; grid + table.

    stainshift train cyclegan --project benchmarks/real_sites.toml --src jtsc --dst pbc --preset cpu --run-id cpu-s0
    stainshift train colorization --project benchmarks/real_sites.toml --src jtsc --dst pbc --epochs 2 ...
    python benchmarks/real_harmonize.py     # -> benchmarks/results/real_harmonize.md, real_harmonize_grid.png

For every method (classical, and each listed kept epoch of the learned runs) it runs ``harmonize`` over the whole
jtsc domain (all 299 images of the 4 shared classes), reporting seconds, and scores the source TEST split
against PBC's test split: mean L*a*b* distance between the domains' colour statistics, and a sliced Wasserstein
distance between pooled L*a*b* pixel samples. It also writes a before/after grid of one test cell per class.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from provenance import cpu_model, git_commit

from stainshift.data.datasets import center_crop, rescale
from stainshift.data.io import read_image, write_image
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.data.stats import to_lab
from stainshift.grids import image_grid
from stainshift.harmonize import HarmonizeRequest, harmonize
from stainshift.project import load_project
from stainshift.runs import kept_epochs, latest_run

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def lab_pixels(paths: list[Path], scale: float, rng: np.random.Generator, per_image: int = 2000) -> np.ndarray:
    out = []
    for p in paths:
        lab = to_lab(rescale(read_image(p), scale)).reshape(-1, 3)
        out.append(lab[rng.choice(len(lab), min(per_image, len(lab)), replace=False)])
    return np.concatenate(out)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_proj: int = 64, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(n_proj, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    qs = np.linspace(0, 1, 200)
    return float(np.mean([np.abs(np.quantile(a @ d, qs) - np.quantile(b @ d, qs)).mean() for d in dirs]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=HERE / "real_sites.toml")
    parser.add_argument("--src", default="jtsc")
    parser.add_argument("--dst", default="pbc")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 3, 5, 10], help="CycleGAN epochs to show")
    args = parser.parse_args()
    project = load_project(args.project)
    src_scale, dst_scale = scale_factor(project, args.src), scale_factor(project, args.dst)

    methods: list[tuple[str, str, int | str | None]] = [("original", "", None)]
    methods += [(m, m, None) for m in ("reinhard", "macenko", "histogram")]
    run = latest_run(project, args.src, args.dst, "cyclegan")
    if run:
        methods += [(f"cyclegan e{e}", "cyclegan", e) for e in args.epochs if e in kept_epochs(run)]
    color = latest_run(project, args.src, args.dst, "colorization")
    if color:
        methods.append((f"colorization e{kept_epochs(color)[-1]}", "colorization", "last"))

    test = samples_in(project, args.src, "test")
    target = samples_in(project, args.dst, "test")
    rng = np.random.default_rng(0)
    target_lab = lab_pixels([s.path for s in target[::4]], dst_scale, rng)
    grid_cells = [next(s for s in test if s.label == c) for c in dict.fromkeys(s.label for s in test)]
    work = Path(tempfile.mkdtemp(prefix="stainshift-real-"))
    rows, table = [], []
    for label, method, epoch in methods:
        if method:
            start = time.perf_counter()
            result = harmonize(project, HarmonizeRequest(args.src, args.dst, method=method, epoch=epoch or "last",
                                                         out=work / label.replace(" ", "_"), progress=False))
            seconds = time.perf_counter() - start
            path_of = {s.key: result.out_dir / s.key for s in test}
            n = result.n_images
        else:
            seconds, n = 0.0, len(test)
            path_of = {s.key: s.path for s in test}
        harmonized = lab_pixels([path_of[s.key] for s in test], src_scale, rng)
        swd = sliced_wasserstein(harmonized, target_lab)
        mean_gap = float(np.abs(harmonized.mean(0) - target_lab.mean(0)).sum())
        table.append({"method": label, "images": n, "seconds": round(seconds, 1), "lab_mean_gap": round(mean_gap, 2),
                      "sliced_wasserstein": round(swd, 2)})
        print(table[-1])
        crop = 96
        rows.append([center_crop(rescale(read_image(path_of[s.key]), src_scale), crop) for s in grid_cells])
    rows.append([center_crop(rescale(read_image(next(t for t in target if t.label == s.label).path), dst_scale), 96)
                 for s in grid_cells])
    labels = [m for m, _, _ in methods] + ["PBC (target)"]
    grid = image_grid(rows, cell=112, row_labels=labels, label_width=130)
    write_image(RESULTS / "real_harmonize_grid.png", grid)
    shutil.rmtree(work, ignore_errors=True)

    commit, cpu = git_commit(), cpu_model()
    lines = [
        f"# Real data: {args.src} -> {args.dst} with every method", "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; commit: {commit}; machine: {cpu}, 2 cores, CPU",
        "- command: `python benchmarks/real_harmonize.py` (after the training commands in its docstring)",
        f"- cyclegan run: {run.name if run else 'none'}; colorization run: {color.name if color else 'none'}",
        f"- colour scores on the {args.src} TEST split against {args.dst}'s test split, both at the common cell "
        "diameter: L*a*b* mean gap (sum of |mean difference| over L, a, b) and sliced Wasserstein distance "
        "between pooled L*a*b* pixels (lower = closer to the target's colours)",
        "- seconds: `harmonize` over the whole source domain (all images of the 4 classes), this CPU",
        "", "| method | images | seconds | L*a*b* mean gap | sliced Wasserstein |", "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['method']} | {r['images']} | {r['seconds']} | {r['lab_mean_gap']} | {r['sliced_wasserstein']} |"
              for r in table]
    lines += ["", "![before/after](real_harmonize_grid.png)", ""]
    (RESULTS / "real_harmonize.md").write_text("\n".join(lines))
    (RESULTS / "real_harmonize.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
