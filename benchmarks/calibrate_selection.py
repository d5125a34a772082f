"""Calibrate the epoch-selection SSIM gate (``stainshift.rules.SSIM_BLUR`` / ``DEFAULT_SSIM_MIN``) on the simulator.

    OMP_NUM_THREADS=1 python benchmarks/calibrate_selection.py      # about a minute on one thread

``stainshift select`` keeps only the epochs whose translations keep the structure of their input: mean grayscale SSIM
(:func:`stainshift.metrics.ssim_gray`, after a Gaussian blur of ``SSIM_BLUR`` px) between each source image and its
translation at least ``ssim_min``. The simulator gives the ground truth such a gate should reproduce: it renders the
SAME cell (identical stain concentration maps and mask) under every hospital for the same seed and index
(:mod:`stainshift.data.simulate`), so for a source hospital (hgtp, site3, site4) and the target (clinic):

- (a) source image vs the same cell rendered by the clinic: a *perfect* translation, which the gate must pass;
- (b) source image vs a *different* cell of the same class rendered by the clinic (a random derangement within the
  class): broken morphology with the right colours, which the gate must reject;
- (c) source image vs the same cell rendered by the clinic with part of its nucleus erased (the nucleus stain
  removed beyond a random line through the nucleus, ``--erase`` of its area, and the cell's median cytoplasm stains
  painted in), the failure seen on real GAN epochs ("most nuclei erased"): reported, not used for the choice.

For every blur sigma, per source hospital: the mean, p10 and p90 of the per-pair SSIM of (a), (b) and (c). The
separation of a sigma is the worst hospital's ``p10(a) - p90(b)`` (the margin between the bulk of the perfect
translations and the bulk of the swapped cells); the chosen sigma maximizes it, and the threshold is the midpoint
between the lowest per-hospital mean (a) and the mean (b) over all sources (the gate compares a *mean* over
validation images with the threshold).

Two scales: ``native``, the simulator's default 96 px images (cells about 38 px across), and ``scaled``, the same
images resized so the median cell spans the project's common 64 px (``--cell-diameter``) and centre-cropped to 96 px,
as ``select`` sees a project with ``cell_diameter = 64`` (the scale of the figures in ``stainshift.select``'s
docstring). Writes ``results/calibrate_selection.md``, ``.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from provenance import git_commit, machine, tree_dirty

from stainshift.data.datasets import center_crop, rescale
from stainshift.data.io import MASK_VALUES, NUCLEUS
from stainshift.data.simulate import _CYT, _NUC, _RBC, CLASSES, Cell, make_cell, render
from stainshift.data.stats import cell_diameter_from_mask
from stainshift.metrics import ssim_gray
from stainshift.rules import DEFAULT_SSIM_MIN, SSIM_BLUR

HERE = Path(__file__).resolve().parent
CONDITIONS = {"a": "same cell, clinic (perfect translation)", "b": "different cell of the same class, clinic",
              "c": "same cell, clinic, part of the nucleus erased"}


def changed_paths() -> list[str]:
    """Tracked files that differ from the commit (what makes :func:`tree_dirty` true)."""
    try:
        out = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                             cwd=HERE.parent, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


def erase_nucleus(cell: Cell, fraction: float, rng: np.random.Generator) -> Cell:
    """A copy of ``cell`` whose nucleus is erased beyond a random line (``fraction`` of its area) and painted over
    with the cell's median cytoplasm stains; the mask is left as it was (only the image is rendered from it)."""
    conc = cell.concentrations.copy()
    nucleus = cell.mask == MASK_VALUES[NUCLEUS]
    cyto = (cell.mask > 0) & ~nucleus
    ys, xs = np.nonzero(nucleus)
    if len(ys) == 0:
        return cell
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:cell.mask.shape[0], 0:cell.mask.shape[1]].astype(np.float32)
    proj = (xx - xs.mean()) * np.cos(angle) + (yy - ys.mean()) * np.sin(angle)
    cut = np.quantile(proj[nucleus], 1.0 - fraction)
    side = np.clip(proj - cut + 0.5, 0.0, 1.0)  # 1 px soft edge
    body = cv2.GaussianBlur((cell.mask > 0).astype(np.float32), (0, 0), 0.7)
    where = side * np.minimum(cv2.GaussianBlur(nucleus.astype(np.float32), (0, 0), 0.7) * 1.5, 1.0) * body
    conc[_NUC] *= 1.0 - side * body
    for s in range(conc.shape[0]):
        if s in (_NUC, _RBC):
            continue
        level = float(np.median(conc[s][cyto])) if cyto.any() else 0.0
        conc[s] = conc[s] * (1.0 - where) + level * where
    conc[_CYT] = np.maximum(conc[_CYT], 0.0)
    return Cell(cell.id, cell.cls, cell.index, conc, cell.mask)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of range(n) without fixed points (n >= 2)."""
    while True:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return p


def render_all(per_class: int, size: int, seed: int, sources: list[str], target: str, erase: float
               ) -> dict[str, np.ndarray]:
    """Images (N, H, W, 3) uint8 of cells 0..per_class-1 of every class: each source, the target, the target with
    the nucleus partly erased, and the target's image of the partner cell for (b); plus masks and labels."""
    rng = np.random.default_rng([seed, 77])
    out: dict[str, list[np.ndarray]] = {h: [] for h in [*sources, target, "erased", "swapped"]}
    masks, labels = [], []
    for k, cls in enumerate(CLASSES):
        cells = [make_cell(cls, i, size, seed) for i in range(per_class)]
        clinic = [render(c, target, seed) for c in cells]
        partner = derangement(per_class, rng)
        for i, cell in enumerate(cells):
            for h in sources:
                out[h].append(render(cell, h, seed))
            out[target].append(clinic[i])
            out["swapped"].append(clinic[partner[i]])
            out["erased"].append(render(erase_nucleus(cell, erase, rng), target, seed))
            masks.append(cell.mask)
            labels.append(k)
    images = {h: np.stack(v) for h, v in out.items()}
    images["masks"], images["labels"] = np.stack(masks), np.asarray(labels)
    return images


def to_scale(images: np.ndarray, factor: float, size: int) -> np.ndarray:
    """Each image resized by ``factor`` and centre-cropped to ``size`` (as ``load_cell`` does)."""
    return np.stack([center_crop(rescale(im, factor), size) for im in images])


def batch_ssim(x: np.ndarray, y: np.ndarray, sigma: float, chunk: int = 64) -> np.ndarray:
    """Per-pair grayscale SSIM of two (N, H, W, 3) uint8 stacks after a ``sigma`` px blur."""
    out = []
    for i in range(0, len(x), chunk):  # contiguous NCHW: the convolutions are twice as fast as on a permuted view
        a = torch.from_numpy(x[i:i + chunk]).permute(0, 3, 1, 2).contiguous().float().div_(255)
        b = torch.from_numpy(y[i:i + chunk]).permute(0, 3, 1, 2).contiguous().float().div_(255)
        out.append(ssim_gray(a, b, blur_sigma=sigma).numpy())
    return np.concatenate(out).astype(np.float64)


def summary(v: np.ndarray) -> dict[str, float]:
    return {"mean": float(v.mean()), "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90)),
            "min": float(v.min()), "max": float(v.max()), "sd": float(v.std())}


def measure(images: dict[str, np.ndarray], sources: list[str], target: str, sigmas: list[float]) -> dict:
    """Per sigma and source: summaries of (a), (b), (c), the separation, the per-class means of (a) and (b)."""
    partners = {"a": target, "b": "swapped", "c": "erased"}
    labels = images["labels"]
    rows, raw = [], {}
    for sigma in sigmas:
        per_source, pooled = {}, {k: [] for k in partners}
        for h in sources:
            values = {k: batch_ssim(images[h], images[p], sigma) for k, p in partners.items()}
            per_source[h] = {k: summary(v) for k, v in values.items()}
            per_source[h]["gap_p10a_p90b"] = per_source[h]["a"]["p10"] - per_source[h]["b"]["p90"]
            per_source[h]["per_class_mean"] = {k: {cls: float(values[k][labels == j].mean())
                                                   for j, cls in enumerate(CLASSES)} for k in ("a", "b")}
            for k, v in values.items():
                pooled[k].append(v)
            raw[(sigma, h)] = values
        worst_a = min(sources, key=lambda h: per_source[h]["a"]["mean"])
        mean_b = float(np.concatenate(pooled["b"]).mean())
        rows.append({
            "sigma": sigma,
            "per_source": per_source,
            "pooled": {k: summary(np.concatenate(v)) for k, v in pooled.items()},
            "separation": min(per_source[h]["gap_p10a_p90b"] for h in sources),
            "separation_source": min(sources, key=lambda h: per_source[h]["gap_p10a_p90b"]),
            "worst_a_source": worst_a,
            "threshold": (per_source[worst_a]["a"]["mean"] + mean_b) / 2,
        })
    return {"rows": rows, "raw": raw}


def decide(result: dict, sources: list[str]) -> dict:
    """The sigma of largest separation, its threshold, and how per-pair SSIM falls on either side of it."""
    best = max(result["rows"], key=lambda r: r["separation"])
    sigma, threshold = best["sigma"], best["threshold"]
    rates = {}
    for h in sources:
        v = result["raw"][(sigma, h)]
        rates[h] = {"a_pass": float((v["a"] >= threshold).mean()), "b_reject": float((v["b"] < threshold).mean()),
                    "c_reject": float((v["c"] < threshold).mean())}
    return {"sigma": sigma, "threshold": threshold, "separation": best["separation"],
            "rounded_threshold": round(threshold * 20) / 20, "per_pair_rates": rates}


def plot(path: Path, scales: dict[str, dict], sources: list[str], sigmas: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(scales), 2, figsize=(11, 3.6 * len(scales)), squeeze=False)
    colours = dict(zip(sources, ("tab:blue", "tab:green", "tab:purple", "tab:brown"), strict=False))
    bins = np.linspace(0, 1, 81)
    for row, (name, res) in zip(axes, scales.items(), strict=True):
        choice = res["choice"]
        ax = row[0]
        peaks = []
        for h in sources:
            v = res["raw"][(choice["sigma"], h)]
            peaks += [np.histogram(v[k], bins)[0].max() for k in "abc"]
            ax.hist(v["a"], bins, histtype="step", color=colours[h], lw=1.5, label=f"(a) {h}: same cell")
            ax.hist(v["b"], bins, histtype="step", color=colours[h], ls="--", label=f"(b) {h}: other cell")
            ax.hist(v["c"], bins, histtype="stepfilled", color=colours[h], alpha=0.15,
                    label=f"(c) {h}: nucleus part erased")
        peaks.sort()
        if peaks[-1] > 2 * peaks[-2]:  # one spike (site4's near-identical images) would flatten the rest
            ax.set_ylim(0, 1.3 * peaks[-2])
        ax.axvline(choice["threshold"], color="tab:red", label=f"threshold {choice['threshold']:.3f}")
        ax.axvline(DEFAULT_SSIM_MIN, color="gray", ls=":", label=f"current {DEFAULT_SSIM_MIN}")
        ax.set_title(f"{name}: per-pair SSIM to the clinic image, blur {choice['sigma']:g} px", fontsize=9)
        ax.set_xlabel("grayscale SSIM", fontsize=8)
        ax.set_ylabel("pairs", fontsize=8)
        ax.legend(fontsize=5.5, ncol=2)
        ax = row[1]
        for h in sources:
            ax.plot(sigmas, [r["per_source"][h]["a"]["p10"] for r in res["rows"]], "o-", color=colours[h],
                    label=f"p10 (a) {h}")
            ax.plot(sigmas, [r["per_source"][h]["b"]["p90"] for r in res["rows"]], "s--", color=colours[h],
                    label=f"p90 (b) {h}")
        ax.plot(sigmas, [r["threshold"] for r in res["rows"]], "-", color="tab:red", label="threshold (midpoint)")
        ax.set_title(f"{name}: p10 of (a) and p90 of (b) vs blur sigma", fontsize=9)
        ax.set_xlabel("blur sigma (px)", fontsize=8)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(res: dict, sources: list[str]) -> list[str]:
    lines = ["| blur (px) | source | (a) mean | (a) p10 | (a) p90 | (b) mean | (b) p10 | (b) p90 | (c) mean | "
             "(c) p10 | (c) p90 | p10(a) - p90(b) |", "|---:|---|" + "---:|" * 10]
    for r in res["rows"]:
        for h in sources:
            s = r["per_source"][h]
            cells = " | ".join(f"{s[k][q]:.3f}" for k in "abc" for q in ("mean", "p10", "p90"))
            lines.append(f"| {r['sigma']:g} | {h} | {cells} | {s['gap_p10a_p90b']:+.3f} |")
    lines += ["", "| blur (px) | separation (worst source) | lowest mean (a) | mean (b), all sources | midpoint "
              "threshold |", "|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['sigma']:g} | {r['separation']:+.3f} ({r['separation_source']}) | "
                     f"{r['per_source'][r['worst_a_source']]['a']['mean']:.3f} ({r['worst_a_source']}) | "
                     f"{r['pooled']['b']['mean']:.3f} | {r['threshold']:.3f} |")
    c = res["choice"]
    lines += ["", f"**Chosen: blur {c['sigma']:g} px, threshold {c['threshold']:.3f}** (separation "
              f"{c['separation']:+.3f}). Per pair at that threshold:", "",
              "| source | (a) passes | (b) rejected | (c) rejected |", "|---|---:|---:|---:|"]
    for h, v in c["per_pair_rates"].items():
        lines.append(f"| {h} | {100 * v['a_pass']:.1f}% | {100 * v['b_reject']:.1f}% | {100 * v['c_reject']:.1f}% |")
    return lines


def report(result: dict) -> str:
    a, m = result["args"], result["machine"]
    sources = a["sources"]
    lines = [
        "# Calibrating the epoch-selection SSIM gate on the simulator",
        "",
        f"- date: {result['date']}",
        f"- commit: {result['commit']} (working tree {'DIRTY' if result['dirty'] else 'clean'} at the start"
        + (f": {len(result['dirty_paths'])} tracked files changed" if result["dirty"] else "") + ")",
        f"- command: `{result['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']}), Python {m['python']}, "
        f"torch {m['torch']}, numpy {m['numpy']}, OpenCV {m['opencv']}; load average {m['load_1min']:.1f} at start",
        f"- settings: simulator seed {a['seed']}, {a['per_class']} cells per class ({a['per_class'] * len(CLASSES)} "
        f"pairs per source and condition; {a['scaled_per_class']} per class at the common scale), {a['size']} px "
        f"images, sources {', '.join(sources)} -> target "
        f"{a['target']}, blur sigmas {a['sigmas']} px, (c) erases {100 * a['erase']:.0f}% of the nucleus; "
        f"{result['seconds']:.0f} s",
        f"- current defaults (stainshift/rules.py): SSIM_BLUR = {SSIM_BLUR}, DEFAULT_SSIM_MIN = {DEFAULT_SSIM_MIN}",
        "",
        "Conditions (SSIM between the source image and ...): " + "; ".join(f"({k}) {v}" for k, v in
                                                                         CONDITIONS.items()) + ".",
        "Separation = the worst source's p10 of (a) minus its p90 of (b); the chosen sigma maximizes it. Threshold = "
        "midpoint between the lowest per-source mean (a) and the mean (b) over all sources.",
        "",
    ]
    for name, res in result["scales"].items():
        head = ("## native: the simulator's 96 px images (cells about "
                f"{res['median_cell_diameter']:.0f} px across)") if name == "native" else (
            f"## scaled: resized x{res['factor']:.3f} so the median cell spans {a['cell_diameter']:g} px, "
            f"centre-cropped to {a['size']} px (as select with cell_diameter = {a['cell_diameter']:g}); "
            f"the first {res['cells_per_class']} cells of each class")
        lines += [head, "", *table(res, sources), ""]
    lines += ["Plot: `calibrate_selection.png` (left: per-pair SSIM of (a), (b), (c) at the chosen sigma; right: "
              "p10 (a) and p90 (b) per sigma).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    commit, dirty, dirty_paths = git_commit(), tree_dirty(), changed_paths()  # at the start
    start_time = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--per-class", type=int, default=200, help="cells per class")
    parser.add_argument("--scaled-per-class", type=int, default=100,
                        help="of those, cells per class measured at the common cell diameter (SSIM takes most of "
                             "the time)")
    parser.add_argument("--size", type=int, default=96, help="image size in pixels (simulator default)")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument("--sources", nargs="+", default=["hgtp", "site3", "site4"], help="source hospitals")
    parser.add_argument("--target", default="clinic", help="target hospital")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0], help="blur sigmas, px")
    parser.add_argument("--erase", type=float, default=0.5, help="fraction of the nucleus erased in (c)")
    parser.add_argument("--cell-diameter", type=float, default=64.0, help="common cell diameter of the scaled run")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    args = parser.parse_args(argv)

    print(f"rendering {args.per_class} cells per class under {', '.join([*args.sources, args.target])} ...",
          flush=True)
    native = render_all(args.per_class, args.size, args.seed, args.sources, args.target, args.erase)
    diameters = [d for d in (cell_diameter_from_mask(m) for m in native["masks"]) if d is not None]
    median = float(np.median(diameters))
    factor = args.cell_diameter / median
    keys = [*args.sources, args.target, "erased", "swapped"]
    subset = np.flatnonzero(np.arange(len(native["labels"])) % args.per_class < args.scaled_per_class)
    scaled = {**{k: to_scale(native[k][subset], factor, args.size) for k in keys}, "labels": native["labels"][subset]}
    print(f"  {time.perf_counter() - start_time:.0f} s; median cell diameter {median:.1f} px, scale x{factor:.3f}",
          flush=True)

    scales = {}
    for name, images in (("native", native), ("scaled", scaled)):
        res = measure(images, args.sources, args.target, args.sigmas)
        res["choice"] = decide(res, args.sources)
        res["median_cell_diameter"] = median if name == "native" else median * factor
        res["factor"] = 1.0 if name == "native" else factor
        res["cells_per_class"] = args.per_class if name == "native" else min(args.per_class, args.scaled_per_class)
        scales[name] = res
        c = res["choice"]
        print(f"  {name}: blur {c['sigma']:g} px, threshold {c['threshold']:.3f} (separation {c['separation']:+.3f})"
              f"  [{time.perf_counter() - start_time:.0f} s]", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    plot(args.out / "calibrate_selection.png", scales, args.sources, args.sigmas)
    result = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "dirty": dirty,
        "dirty_paths": dirty_paths[:100],
        "command": shlex.join([sys.executable, *sys.argv] if argv is None else ["calibrate_selection.py", *argv]),
        "machine": machine(opencv=cv2.__version__),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "conditions": CONDITIONS,
        "current": {"ssim_blur": SSIM_BLUR, "ssim_min": DEFAULT_SSIM_MIN},
        "seconds": time.perf_counter() - start_time,
        "scales": {name: {k: v for k, v in res.items() if k != "raw"} for name, res in scales.items()},
    }
    (args.out / "calibrate_selection.json").write_text(json.dumps(result, indent=2) + "\n")
    result["scales"] = scales
    (args.out / "calibrate_selection.md").write_text(report(result))
    print(f"wrote {args.out / 'calibrate_selection.md'} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
