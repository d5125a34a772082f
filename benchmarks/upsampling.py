"""Checkerboards: transposed-convolution vs resize-convolution generators, on flat background, same everything else.

Two sets of jtsc -> pbc CycleGAN runs, identical but for ``upsample``: the `cpu` preset (``cpu-sN``, transposed
convolutions) and ``resize-sN``, trained as

    stainshift train cyclegan --project benchmarks/real_sites.toml --src jtsc --dst pbc --preset cpu --epochs 5 \\
        --seed S --run-id resize-sS --set upsample=resize        # S = 0, 1, 2

For every kept epoch of every run, each jtsc test image is translated at the common scale as harmonize does, and

- checkerboard on flat background: in 16x16 tiles that are flat in the input (gray standard deviation in the
  lowest quarter of the image's tiles, brighter than its median: the smear's background), the share of the tile's
  non-DC spectral power at the periods 2 and 4 px (the stride-2 upsamplings' periods), over the share those 15 of
  255 frequencies would get from white noise (1 = no periodic pattern). Median over images, of the generator's own
  output and of the harmonized image (the carried change, ``keep_detail``), both at the common scale; the input's
  value is the floor;
- accuracy of the reported PBC ResNet18 on the harmonized images, paired by (seed, epoch) between the variants
  (paired bootstrap of the test images, means over the 15 seed-epochs).

    python benchmarks/upsampling.py

``--variant stable-`` compares the stable variant's runs instead (resize-convolutions with EMA and class-balanced
sampling; see ``stable_translation.py``): confounded, so only a first look. Writes ``results/upsampling.md``,
``.json`` and ``.jpg`` (``upsampling_stable.*`` for the stable runs). Refuses a dirty tree (``--allow-dirty``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from stainshift import runs
from stainshift.atomic import atomic_write_text
from stainshift.classify.evaluate import evaluate_arrays
from stainshift.classify.models import load_classifier
from stainshift.data.datasets import rescale
from stainshift.data.domains import read_sample
from stainshift.data.io import write_image
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.grids import image_grid
from stainshift.harmonize import back_to_size, source_scale, translate_one
from stainshift.models.registry import load_epoch
from stainshift.paired_stats import PairedBootstrap
from stainshift.project import load_project
from stainshift.provenance import record, require_clean

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CLASSIFIER = "pbc-resnet18-group"
SOURCE, TARGET = "jtsc", "pbc"
BASELINE = "cpu-"
NAMES = {"cpu-": "transposed convolutions (cpu preset)", "resize-": "resize-convolutions (upsample=resize)",
         "stable-": "resize-convolutions + EMA + balanced (the stable variant)"}
TILE = 16
_f = np.fft.fftfreq(TILE)
_periodic = np.isin(np.round(np.abs(_f), 4), (0.0, 0.25, 0.5))
CHECKER_BINS = np.outer(_periodic, _periodic)
CHECKER_BINS[0, 0] = False  # DC
NOISE_SHARE = CHECKER_BINS.sum() / (TILE * TILE - 1)


def flat_tiles(small_input: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corners of the input's flat, bright (background) tiles."""
    gray = cv2.cvtColor(small_input, cv2.COLOR_RGB2GRAY).astype(np.float32)
    corners = [(y, x) for y in range(0, gray.shape[0] - TILE + 1, TILE) for x in range(0, gray.shape[1] - TILE + 1,
                                                                                      TILE)]
    if not corners:
        return []
    stds = np.array([gray[y:y + TILE, x:x + TILE].std() for y, x in corners])
    means = np.array([gray[y:y + TILE, x:x + TILE].mean() for y, x in corners])
    keep = (stds <= np.quantile(stds, 0.25)) & (means > np.median(gray))
    return [c for c, k in zip(corners, keep, strict=True) if k]


def checker_ratio(image: np.ndarray, corners: list[tuple[int, int]]) -> float:
    """Mean over the tiles of the periodic share of spectral power, over white noise's share."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    shares = []
    for y, x in corners:
        tile = gray[y:y + TILE, x:x + TILE]
        power = np.abs(np.fft.fft2(tile - tile.mean())) ** 2
        total = power.sum() - power[0, 0]
        if total > 1e-9:
            shares.append(power[CHECKER_BINS].sum() / total / NOISE_SHARE)
    return float(np.mean(shares)) if shares else float("nan")


def measure(project, run: Path, epoch: int, samples, originals, clf) -> dict:
    model, meta = load_epoch(runs.epoch_file(run, epoch))
    model.eval()
    scale = source_scale(project, SOURCE, meta)
    raw_ratio, out_ratio, carried_ratio, harmonized = [], [], [], []
    for original in originals:
        small, out = translate_one(model, original, scale)
        full = back_to_size(original, small, out, keep_detail=True)
        harmonized.append(full)
        corners = flat_tiles(small)
        raw_ratio.append(checker_ratio(small, corners))
        out_ratio.append(checker_ratio(out, corners))
        carried_ratio.append(checker_ratio(rescale(full, scale), corners))
    report = evaluate_arrays(clf, harmonized, [s.label for s in samples], scale=scale_factor(project, SOURCE),
                             n_boot=0)
    return {"run": run.name, "epoch": epoch, "input": float(np.nanmedian(raw_ratio)),
            "generator": float(np.nanmedian(out_ratio)), "harmonized": float(np.nanmedian(carried_ratio)),
            "flat_tiles": float(np.mean([len(flat_tiles(rescale(o, scale))) for o in originals[:20]])),
            "accuracy": float(report.accuracy),
            "correct": (np.asarray(report.y_true) == np.asarray(report.y_pred)).tolist(),
            "examples": [harmonized[i] for i in range(4)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=str(HERE / "real_sites.toml"))
    parser.add_argument("--variant", default="resize-", choices=[p for p in NAMES if p != BASELINE],
                        help="the runs compared with the cpu- ones (stable-: confounded by EMA and balancing)")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    require_clean(args.allow_dirty, "benchmarks/upsampling.py")
    variants = {BASELINE: NAMES[BASELINE], args.variant: NAMES[args.variant]}
    out = RESULTS / ("upsampling" if args.variant == "resize-" else f"upsampling_{args.variant.rstrip('-')}")
    meta = record(vars(args))
    torch.set_num_threads(1)
    start = time.perf_counter()
    project = load_project(args.project)
    clf = load_classifier(runs.find_classifier(project.runs, CLASSIFIER))
    samples = [s for s in samples_in(project, SOURCE, "test") if s.label in clf.classes]
    originals = [read_sample(s) for s in samples]
    results: dict[str, list[dict]] = {}
    for prefix in variants:
        seeds = runs.runs_by_seed(project, SOURCE, TARGET, "cyclegan", prefix)
        if not seeds:
            sys.exit(f"no {prefix}sN CycleGAN runs of {SOURCE} -> {TARGET}; train them first (see the docstring)")
        results[prefix] = [measure(project, run, e, samples, originals, clf) for seed, run in sorted(seeds.items())
                           for e in runs.kept_epochs(run)]
        print(f"{prefix}: {len(results[prefix])} epochs measured ({time.perf_counter() - start:.0f} s)", flush=True)
    by = {p: {(r["run"].split("-s")[-1], r["epoch"]): r for r in results[p]} for p in variants}
    pairs = set(by[BASELINE]) & set(by[args.variant])
    keys = sorted(pairs)
    boot = PairedBootstrap(len(samples), seed=0)
    a = np.array([by[args.variant][k]["correct"] for k in keys], dtype=float)
    b = np.array([by[BASELINE][k]["correct"] for k in keys], dtype=float)
    diff = boot.difference(a, b)
    meta["seconds"] = time.perf_counter() - start
    summary = {}
    for p in variants:
        rows = [by[p][k] for k in keys]
        summary[p] = {m: float(np.median([r[m] for r in rows])) for m in ("input", "generator", "harmonized")}
        summary[p]["accuracy"] = float(np.mean([r["accuracy"] for r in rows]))
        summary[p]["accuracy_sd"] = float(np.std([r["accuracy"] for r in rows]))
    grid_rows = [originals[:4]] + [by[p][keys[0]]["examples"] for p in variants]
    write_image(out.with_suffix(".jpg"), image_grid(grid_rows, cell=160, row_labels=[
        "jtsc input", *(f"{p}s{keys[0][0]} e{keys[0][1]}" for p in variants)], label_width=150))
    clean = {p: [{k: v for k, v in r.items() if k not in ("correct", "examples")} for r in rows]
             for p, rows in results.items()}
    atomic_write_text(out.with_suffix(".json"), json.dumps(
        {"meta": meta, "summary": summary, "accuracy_variant_minus_transposed": [diff.value, diff.low, diff.high,
                                                                                 diff.verdict()], "epochs": clean},
        indent=2, default=str))
    m = meta["machine"]
    lines = [f"# Transposed convolutions vs {NAMES[args.variant]}: checkerboards on flat background", "",
             f"- started {meta['started']}, commit {meta['commit']}{' (DIRTY TREE)' if meta['dirty'] else ''}, "
             f"{meta['seconds']:.0f} s, machine: {m['cpu']}, {m['cores']} cores, CPU only",
             f"- command: `{' '.join(sys.argv)}`",
             f"- jtsc -> pbc CycleGAN, `cpu` preset, 5 epochs, seeds {', '.join(sorted({k[0] for k in keys}))} (those "
             f"trained for both variants), every epoch ({len(keys)} seed-epochs per variant); {len(samples)} jtsc "
             f"test images; reported classifier `{CLASSIFIER}`",
             "- checkerboard: periodic (2/4 px) share of spectral power in flat background tiles over white noise's "
             "share (1 = none), median over images and seed-epochs", "",
             "| upsampling | input (floor) | generator output | harmonized (carried change) | accuracy, mean (sd) "
             "over seed-epochs |", "|---|---:|---:|---:|---|"]
    for p, name in variants.items():
        s = summary[p]
        lines.append(f"| {name} | {s['input']:.2f} | {s['generator']:.2f} | {s['harmonized']:.2f} | "
                     f"{s['accuracy']:.3f} ({s['accuracy_sd']:.3f}) |")
    lines += ["", f"Accuracy, {args.variant}runs minus transposed, paired by seed and epoch: {diff.value:+.3f} "
                  f"({diff.low:+.3f} to {diff.high:+.3f}) {diff.verdict()}", "",
              f"| seed | epoch | transposed: generator / harmonized / accuracy | {args.variant}: generator / "
              "harmonized / accuracy |", "|---:|---:|---|---|"]
    for k in keys:
        t, r = by[BASELINE][k], by[args.variant][k]
        lines.append(f"| {k[0]} | {k[1]} | {t['generator']:.2f} / {t['harmonized']:.2f} / {t['accuracy']:.3f} | "
                     f"{r['generator']:.2f} / {r['harmonized']:.2f} / {r['accuracy']:.3f} |")
    lines += ["", "First four jtsc test cells: input, then each variant's harmonized output (same seed and epoch).",
              "", f"![upsampling]({out.name}.jpg)", ""]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
