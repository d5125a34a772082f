"""The yardstick for synthetic data: does it help a U-Net segment real cells? (paper 001, Table 2)

    python benchmarks/synthesis.py                      # -> benchmarks/results/synthesis.md (+ .csv, .json, .png)
    python benchmarks/synthesis.py --quick --allow-dirty   # smoke run, writes nothing under results/

Sites: bccd smear fields (640x480, one white cell each; nucleus/cytoplasm masks) and jtsc_tecom single cells
(~120x120; nucleus/cytoplasm masks), both from ../shared/data (or STAINSHIFT_DATA). Each site gets a fixed, seeded
test split of 100 images that nothing else touches: not training, not the shape database, not any choice.

Training sets (paper 001's names), per site and seed, all trained for the same number of iterations:

- RD: 60 real images of the remaining pool (a fixed draw), random crops;
- RD+aug: the same with paper 001's augmentations (flips, blur, sharpen, noise, channel inversion, brightness,
  contrast, grayscale);
- SD: 240 synthetic images: masks from `stainshift.synth` (shapes of the pool's masks, red cells sized from
  bccd_voc, adhesion-aware Markov placement) rendered by the stain simulator under the site's look-alike protocol
  (bccd -> site3, jtsc -> hgtp). The mask-to-image generators of the next issue add their images here;
- RD+SD, RD+SD+aug: half of each batch real, half synthetic.

The model: segmentation-models-pytorch U-Net, ResNet18 encoder from scratch (nothing downloaded), 3 classes
(background, cytoplasm, nucleus: the real masks do not label red cells, so synthetic red cells train as
background). Score: per test image the mean Dice of cytoplasm and nucleus; a condition's value is the mean over
images and seeds, with a paired bootstrap CI (the same resampled test images for every condition) and the
paired difference to RD.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from provenance import record, require_clean

from stainshift.data.io import cell_regions, read_image, read_mask
from stainshift.paired_stats import PairedBootstrap
from stainshift.synth.masks import SEMANTIC, MaskSpec, compose
from stainshift.synth.render import render_mask
from stainshift.synth.segmenter import dice_per_image, predict, train_segmenter
from stainshift.synth.shapes import build_database

RESULTS = Path(__file__).resolve().parent / "results"
CONDITIONS = ("RD", "RD+aug", "SD", "RD+SD", "RD+SD+aug")
PAPER_001_FCN = {"RD": 0.961, "SD": 0.848, "RD+aug": 0.962, "RD+SD": 0.948, "RD+SD+aug": 0.964}
N_TEST, N_REAL, N_SYNTH = 100, 60, 240
SPLIT_SEED = 20261201


def data_root() -> Path:
    root = Path(os.environ.get("STAINSHIFT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (root / "bccd").is_dir():
        sys.exit(f"synthesis.py: no shared data at {root}; set STAINSHIFT_DATA to the folder holding bccd/")
    return root


@dataclass
class Site:
    """A real data set: image and mask files with a class each, how it is resized, and how its SD is drawn."""

    name: str
    items: list[tuple[Path, Path, str]]
    size: tuple[int, int]  # (w, h) the images are resized to for training and testing
    field: tuple[int, int]  # (w, h) the synthetic masks are drawn at, before the same resize
    crop: bool  # single-cell crops (True) or whole fields
    hospital: str


def bccd_site(root: Path) -> Site:
    classes = {}  # BloodImage_NNNNN -> class, from the labelled crops BloodImage_NNNNN_1.jpg
    for folder in sorted((root / "bccd").iterdir()):
        if folder.is_dir() and folder.name not in ("masks", "smears"):
            for f in folder.iterdir():
                classes[f.stem.rsplit("_", 1)[0]] = folder.name
    items = []
    for mask in sorted((root / "bccd" / "masks" / "smears").glob("BloodImage_Mask_*.png")):
        stem = mask.stem.replace("_Mask", "")
        image = root / "bccd" / "smears" / f"{stem}.jpg"
        if image.exists():
            items.append((image, mask, classes.get(stem, "white_cell")))
    return Site("bccd", items, size=(224, 168), field=(640, 480), crop=False, hospital="site3")


def jtsc_site(root: Path) -> Site:
    base = root / "jtsc_tecom"
    items = []
    for folder in sorted(base.iterdir()):
        if not folder.is_dir() or folder.name == "masks":
            continue
        for image in sorted(folder.iterdir()):
            mask = base / "masks" / folder.name / f"{image.stem}.png"
            if mask.exists():
                items.append((image, mask, folder.name))
    return Site("jtsc", items, size=(96, 96), field=(120, 120), crop=True, hospital="hgtp")


def load_pair(image: np.ndarray, regions: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return (cv2.resize(image, size, interpolation=cv2.INTER_AREA),
            cv2.resize(regions, size, interpolation=cv2.INTER_NEAREST))


def split(site: Site) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(SPLIT_SEED).permutation(len(site.items))
    return sorted(order[:N_TEST].tolist()), order[N_TEST:].tolist()


def synthetic_set(site: Site, pool: list[int], n: int, seed: int) -> tuple[np.ndarray, np.ndarray, object]:
    """``n`` simulator renders of synthetic masks drawn from the pool's shapes, and their 3-class targets."""
    db = build_database(site.name, [(site.items[i][1], site.items[i][2]) for i in pool])
    # bccd fields share bccd_voc's scale (the same 640x480 BCCD fields): its red-cell boxes give the size directly
    stats = db.field_stats
    red_px = stats.red_to_white_diameter * stats.white_px if site.name == "bccd" else None
    spec = MaskSpec(size=site.field, crop=site.crop, red_px=red_px)
    images, targets = [], []
    for k in range(n):
        rng = np.random.default_rng([seed, 7, k])
        mask = compose(db, spec, rng)
        image = render_mask(mask, site.hospital, rng, white_px=db.diameter())
        target = np.zeros(mask.semantic.shape, np.uint8)
        target[mask.semantic == SEMANTIC["cytoplasm"]] = 1
        target[mask.semantic == SEMANTIC["nucleus"]] = 2
        x, y = load_pair(image, target, site.size)
        images.append(x)
        targets.append(y)
    return np.stack(images), np.stack(targets), db


# -- paper 001's augmentations -----------------------------------------------------------------------------------
def augment(image: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
    if rng.random() < 0.5:
        image, target = image[::-1], target[::-1]
    x = np.ascontiguousarray(image).astype(np.float32)
    p = 0.2
    if rng.random() < p:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.5, 1.5)))
    if rng.random() < p:  # sharpen (unsharp mask)
        x = x + float(rng.uniform(0.3, 1.0)) * (x - cv2.GaussianBlur(x, (0, 0), 1.0))
    if rng.random() < p:
        x = x + rng.normal(0.0, float(rng.uniform(3, 12)), x.shape).astype(np.float32)
    if rng.random() < p * 0.5:  # colour channel inversion
        c = int(rng.integers(3))
        x[:, :, c] = 255.0 - x[:, :, c]
    if rng.random() < p:
        x = x * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-20, 20))
    if rng.random() < p:  # contrast normalisation
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = (x - mean) * float(rng.uniform(0.7, 1.3)) + mean
    if rng.random() < p:
        gray = x.mean(axis=2, keepdims=True)
        a = float(rng.uniform(0.3, 1.0))
        x = (1 - a) * x + a * gray
    return np.clip(x, 0, 255).astype(np.uint8), np.ascontiguousarray(target)


def train(sources: list[tuple[np.ndarray, np.ndarray]], augmented: bool, seed: int, iters: int, crop: int,
          batch: int, progress: Callable[[int], None] | None = None) -> torch.nn.Module:
    """The package's U-Net (:mod:`stainshift.synth.segmenter`), with paper 001's augmentation when ``augmented``."""
    return train_segmenter(sources, seed, iters, crop, batch, augment=augment if augmented else None,
                           progress=progress)


# -- the run ------------------------------------------------------------------------------------------------------
def run_site(site: Site, seeds: list[int], iters: int, batch: int, crop: int, n_synth: int, quiet: bool,
             pictures: dict) -> dict:
    test_idx, pool = split(site)
    real_idx = pool[:N_REAL]

    def load(indices):
        xs, ys = zip(*(load_pair(read_image(site.items[i][0]), cell_regions(read_mask(site.items[i][1])),
                                 site.size) for i in indices), strict=True)
        return np.stack(xs), np.stack(ys)

    test_x, test_y = load(test_idx)
    real_x, real_y = load(real_idx)
    scores = {c: [] for c in CONDITIONS}
    timings = {}
    for seed in seeds:
        t0 = time.time()
        synth_x, synth_y, db = synthetic_set(site, pool, n_synth, seed)
        timings.setdefault("synthetic_set_s", []).append(round(time.time() - t0, 1))
        if seed == seeds[0]:
            pictures[site.name] = {"synth": (synth_x[:4], synth_y[:4]), "test": (test_x[:4], test_y[:4]),
                                   "shapes": db.counts()}
        sources = {"RD": ([(real_x, real_y)], False), "RD+aug": ([(real_x, real_y)], True),
                   "SD": ([(synth_x, synth_y)], False), "RD+SD": ([(real_x, real_y), (synth_x, synth_y)], False),
                   "RD+SD+aug": ([(real_x, real_y), (synth_x, synth_y)], True)}
        for cond in CONDITIONS:
            t0 = time.time()
            data, aug = sources[cond]
            model = train(data, aug, seed, iters, min(crop, *site.size[::-1]), batch)
            pred = predict(model, test_x)
            scores[cond].append(dice_per_image(pred, test_y))
            timings.setdefault(cond, []).append(round(time.time() - t0, 1))
            if seed == seeds[0]:
                pictures[site.name].setdefault("pred", {})[cond] = pred[:4]
            if not quiet:
                d = scores[cond][-1].mean()
                print(f"  {site.name} seed {seed} {cond:<10} Dice {d:.3f}  ({time.time() - t0:.0f} s)", flush=True)
    return {"test": [site.items[i][0].name for i in test_idx], "real": [site.items[i][0].name for i in real_idx],
            "scores": {c: np.stack(v) for c, v in scores.items()}, "timings": timings}


def summarise(site: str, result: dict, n_boot: int) -> list[dict]:
    scores = result["scores"]  # cond -> (seeds, n, 2)
    n = scores["RD"].shape[1]
    boot = PairedBootstrap(n, n_boot=n_boot, seed=0)
    rd = scores["RD"].mean(axis=2)
    rows = []
    for cond in CONDITIONS:
        s = scores[cond]
        per_image = s.mean(axis=2)  # (seeds, n)
        value = boot.mean_score(per_image)
        diff = boot.score_difference(per_image, rd) if cond != "RD" else None
        rows.append({
            "site": site, "condition": cond, "dice": value.value, "low": value.low, "high": value.high,
            "cytoplasm": float(s[:, :, 0].mean()), "nucleus": float(s[:, :, 1].mean()),
            "per_seed": [round(float(v), 4) for v in per_image.mean(axis=1)],
            "seed_sd": float(per_image.mean(axis=1).std(ddof=1)) if len(per_image) > 1 else float("nan"),
            "vs_rd": diff.value if diff else 0.0, "vs_rd_low": diff.low if diff else 0.0,
            "vs_rd_high": diff.high if diff else 0.0,
            "vs_rd_verdict": (diff.verdict() if diff else "(reference)"),
            "paper_001_fcn": PAPER_001_FCN[cond],
        })
    return rows


COLOURS = np.array([[255, 255, 255], [120, 170, 240], [90, 20, 120]], np.uint8)  # bg, cytoplasm, nucleus


def picture(pictures: dict, path: Path) -> None:
    """Per site: synthetic examples with their masks, then test images, truth and each condition's prediction."""
    rows = []
    for site, p in pictures.items():
        sx, sy = p["synth"]
        tx, ty = p["test"]
        synth_row = np.concatenate([np.concatenate([sx[k], COLOURS[sy[k]]], axis=1) for k in range(len(sx))], 1)
        rows.append(_label(synth_row, f"{site}: synthetic images (simulator renders of synthetic masks) | masks"))
        for k in range(len(tx)):
            tiles = [tx[k], COLOURS[ty[k]]] + [COLOURS[p["pred"][c][k]] for c in CONDITIONS]
            rows.append(_label(np.concatenate(tiles, axis=1), "test image | truth | " + " | ".join(CONDITIONS)
                               if k == 0 else ""))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))


def _label(row: np.ndarray, text: str) -> np.ndarray:
    if not text:
        return row
    bar = np.full((18, row.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, row], axis=0)


def write_results(rows: list[dict], prov: dict, config: dict, results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "synthesis.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[k for k in rows[0] if k != "per_seed"] + ["per_seed"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "per_seed": " ".join(map(str, r["per_seed"]))})
    payload = {"provenance": prov, "config": config, "rows": rows,
               "splits": {s: {"test": r["test"], "real": r["real"]} for s, r in results.items()},
               "timings_s": {s: r["timings"] for s, r in results.items()}}
    (out / "synthesis.json").write_text(json.dumps(payload, indent=1))
    lines = [
        "# Does synthetic data help a U-Net segment real cells? (paper 001's Table 2, on this machine)", "",
        f"Commit {prov['commit']} (dirty: {prov['dirty']}), started {prov['started']}, {prov['machine']}.",
        f"Command: `{prov['command']}`.", "",
        f"Per site: a fixed test split of {N_TEST} real images (never used for training, shapes or any choice); "
        f"RD = {N_REAL} real images; SD = {config['n_synth']} simulator renders of synthetic masks "
        "(shapes from the other real masks, Markov layout); U-Net (ResNet18 encoder, from scratch), "
        f"{config['iters']} iterations of batch {config['batch']} at {config['crop']} px crops, seeds "
        f"{config['seeds']}. Dice = mean of cytoplasm and nucleus Dice per test image; value = mean over images "
        "and seeds with a 95% paired bootstrap CI; 'vs RD' = paired difference on the same resampled images.", "",
        "| site | training data | Dice [95% CI] | per seed | vs RD [95% CI] | cytoplasm | nucleus | paper 001 FCN |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs = "reference" if r["condition"] == "RD" else \
            f"{r['vs_rd']:+.3f} [{r['vs_rd_low']:+.3f}, {r['vs_rd_high']:+.3f}] {r['vs_rd_verdict']}"
        lines.append(f"| {r['site']} | {r['condition']} | {r['dice']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | "
                     f"{' / '.join(f'{v:.3f}' for v in r['per_seed'])} | {vs} | {r['cytoplasm']:.3f} | "
                     f"{r['nucleus']:.3f} | {r['paper_001_fcn']:.3f} |")
    lines += ["", "Paper 001's FCN figures are for red cells in 1920x1200 fields with its pix2pixHD images as SD; "
              "they are the shape of the comparison, not a target for these numbers.", "",
              "![predictions](synthesis.png)", ""]
    (out / "synthesis.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", default="bccd,jtsc")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iters", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--n-synth", type=int, default=N_SYNTH)
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, 20 iterations, nothing written")
    parser.add_argument("--allow-dirty", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.iters, args.n_synth, args.boot = "0", 20, 16, 200
    require_clean(args.allow_dirty or args.quick, "synthesis.py")
    config = {"sites": args.sites.split(","), "seeds": [int(s) for s in args.seeds.split(",")], "iters": args.iters,
              "batch": args.batch, "crop": args.crop, "n_synth": args.n_synth, "n_test": N_TEST,
              "n_real": N_REAL, "split_seed": SPLIT_SEED}
    prov = record(config)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    root = data_root()
    builders = {"bccd": bccd_site, "jtsc": jtsc_site}
    results, rows, pictures = {}, [], {}
    for name in config["sites"]:
        site = builders[name](root)
        if not args.quiet:
            print(f"{name}: {len(site.items)} images with masks", flush=True)
        results[name] = run_site(site, config["seeds"], args.iters, args.batch, args.crop, args.n_synth,
                                 args.quiet, pictures)
        rows += summarise(name, results[name], args.boot)
    out = Path("/tmp/synthesis_quick") if args.quick else RESULTS
    write_results(rows, prov, config, results, out)
    picture(pictures, out / "synthesis.png")
    print((out / "synthesis.md").read_text())


if __name__ == "__main__":
    main()
