"""Stain-shift simulator benchmark: rendering speed, and how much a clinic-trained CNN loses on hgtp.

    python benchmarks/simulator_shift.py            # a few minutes on 2 CPU cores

(a) images/s at 96x96: cell generation + rendering of one hospital image, in memory and with PNG writing (image
and mask files, via ``simulate``). (b) the baseline CNN is trained on the clinic images of cells 0..N-1 of every
class and tested on held-out cells N..N+M-1 rendered under clinic and under hgtp (the same cells, so the gap is
the stain shift alone). Writes ``results/simulator_shift.md``, ``.json`` and ``simulator_examples.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from provenance import git_commit, machine

from stainshift.classify.baseline import per_class_accuracy, predict, train_baseline
from stainshift.data.io import write_image
from stainshift.data.simulate import CLASSES, make_cell, render, render_cells, simulate

HERE = Path(__file__).resolve().parent

TARGETS = {"clinic_accuracy": 0.95, "drop_points": 25.0, "images_per_s": 200.0}


def measure_speed(per_class: int, size: int, seed: int) -> dict:
    """Images/s for generation + rendering of one hospital image, in memory and written as PNG."""
    make_cell(CLASSES[0], 10**6, size, seed)  # warm caches
    start = time.perf_counter()
    n = 0
    for cls in CLASSES:
        for i in range(per_class):
            render(make_cell(cls, i, size, seed), "clinic", seed)
            n += 1
    in_memory = n / (time.perf_counter() - start)
    cells = [make_cell(cls, i, size, seed) for cls in CLASSES for i in range(per_class)]
    start = time.perf_counter()
    for cell in cells:
        render(cell, "hgtp", seed)
    render_only = len(cells) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        simulate(Path(tmp) / "one", hospitals=["clinic"], per_class=per_class, size=size, seed=seed)
        with_png = n / (time.perf_counter() - start)
        start = time.perf_counter()
        simulate(Path(tmp) / "two", hospitals=2, per_class=per_class, size=size, seed=seed)
        with_png_two = 2 * n / (time.perf_counter() - start)
    return {"images": n, "in_memory_images_per_s": in_memory, "render_only_images_per_s": render_only,
            "with_png_images_per_s": with_png, "with_png_two_hospitals_images_per_s": with_png_two}


def example_grid(path: Path, per_row: int, size: int, seed: int) -> None:
    """Rows = classes; column pairs = the same cell under clinic and hgtp."""
    batch = render_cells(per_row, ["clinic", "hgtp"], size=size, seed=seed)
    label_w, head_h, gap = 92, 18, 6
    rows = []
    for k, cls in enumerate(CLASSES):
        tiles = [np.full((size, label_w, 3), 255, np.uint8)]
        cv2.putText(tiles[0], cls, (4, size // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        for j in np.flatnonzero(batch.labels == k):
            tiles += [batch.images["clinic"][j], batch.images["hgtp"][j], np.full((size, gap, 3), 255, np.uint8)]
        rows.append(np.hstack(tiles))
    head = np.full((head_h, rows[0].shape[1], 3), 255, np.uint8)
    for j in range(per_row):
        x = label_w + j * (2 * size + gap)
        for name, dx in (("clinic", 0), ("hgtp", size)):
            cv2.putText(head, name, (x + dx + 4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    write_image(path, np.vstack([head, *rows]))


def measure_shift(train_per_class: int, test_per_class: int, epochs: int, size: int, seed: int,
                  train_seeds: list[int]) -> dict:
    """Train on clinic cells 0..N-1, test on cells N..N+M-1 under clinic and hgtp."""
    start = time.perf_counter()
    train = render_cells(train_per_class, ["clinic"], size=size, seed=seed)
    test = render_cells(test_per_class, ["clinic", "hgtp"], size=size, seed=seed, start=train_per_class)
    render_s = time.perf_counter() - start
    runs = []
    for s in train_seeds:
        start = time.perf_counter()
        model = train_baseline(train.images["clinic"], train.labels, epochs=epochs, seed=s, class_names=CLASSES)
        train_s = time.perf_counter() - start
        run = {"train_seed": s, "train_s": train_s}
        for hospital in ("clinic", "hgtp"):
            pred = predict(model, test.images[hospital])
            run[hospital] = {"accuracy": float((pred == test.labels).mean()),
                             "per_class": dict(zip(CLASSES, per_class_accuracy(pred, test.labels, len(CLASSES))
                                                   .tolist(), strict=True)),
                             "predicted_counts": dict(zip(CLASSES, np.bincount(pred, minlength=len(CLASSES))
                                                          .tolist(), strict=True))}
        run["drop_points"] = 100 * (run["clinic"]["accuracy"] - run["hgtp"]["accuracy"])
        runs.append(run)
        print(f"seed {s}: clinic {run['clinic']['accuracy']:.3f}  hgtp {run['hgtp']['accuracy']:.3f}  "
              f"drop {run['drop_points']:.1f} points  ({train_s:.0f} s)", flush=True)
    return {"train_cells": len(train.ids), "test_cells": len(test.ids), "render_s": render_s, "runs": runs,
            "clinic_accuracy": float(np.mean([r["clinic"]["accuracy"] for r in runs])),
            "hgtp_accuracy": float(np.mean([r["hgtp"]["accuracy"] for r in runs])),
            "drop_points": float(np.mean([r["drop_points"] for r in runs]))}


def report(result: dict) -> str:
    sp, sh, m = result["speed"], result["shift"], result["machine"]
    ok = result["targets_met"]
    lines = [
        "# Stain-shift simulator benchmark",
        "",
        f"- date: {result['date']}",
        f"- commit: {result['commit']}",
        f"- command: `{result['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores (torch threads {m['torch_threads']}), Python {m['python']}, "
        f"torch {m['torch']}, numpy {m['numpy']}, OpenCV {m['opencv']}; load average {m['load_1min']:.1f} at start "
        "(timings vary with other work on the machine)",
        f"- settings: size {result['args']['size']} px, data seed {result['args']['seed']}, "
        f"{result['args']['train_per_class']} train + {result['args']['test_per_class']} test cells per class, "
        f"{result['args']['epochs']} epochs, CNN seeds {result['args']['train_seeds']}",
        "",
        "## (a) Rendering speed (96x96 unless stated; single process)",
        "",
        "| what | images/s |",
        "|---|---:|",
        f"| generate cell + render one hospital image, in memory | {sp['in_memory_images_per_s']:.0f} |",
        f"| render only (cell already generated) | {sp['render_only_images_per_s']:.0f} |",
        f"| `simulate()` one hospital, PNG image + PNG mask written | {sp['with_png_images_per_s']:.0f} |",
        f"| `simulate()` two hospitals (morphology shared), PNGs written | "
        f"{sp['with_png_two_hospitals_images_per_s']:.0f} |",
        "",
        f"Measured over {sp['images']} cells ({sp['images'] // len(CLASSES)} per class). "
        f"Target >= {TARGETS['images_per_s']:.0f} images/s in memory: {'met' if ok['speed'] else 'NOT met'}.",
        "",
        "## (b) Clinic-trained baseline CNN on clinic vs hgtp (same held-out cells)",
        "",
        f"Train: {sh['train_cells']} clinic images; test: {sh['test_cells']} held-out cells, each rendered under "
        "clinic and hgtp.",
        "",
        "| CNN seed | clinic acc | hgtp acc | drop (points) | train time (s) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in sh["runs"]:
        lines.append(f"| {r['train_seed']} | {100 * r['clinic']['accuracy']:.1f}% | {100 * r['hgtp']['accuracy']:.1f}% "
                     f"| {r['drop_points']:.1f} | {r['train_s']:.0f} |")
    lines += [
        f"| **mean** | **{100 * sh['clinic_accuracy']:.1f}%** | **{100 * sh['hgtp_accuracy']:.1f}%** | "
        f"**{sh['drop_points']:.1f}** | |",
        "",
        f"Targets: clinic >= {100 * TARGETS['clinic_accuracy']:.0f}% ({'met' if ok['clinic'] else 'NOT met'}), "
        f"drop >= {TARGETS['drop_points']:.0f} points ({'met' if ok['drop'] else 'NOT met'}).",
        "",
        "Per-class accuracy (first CNN seed) and what the hgtp images were predicted as:",
        "",
        "| class | clinic | hgtp | hgtp predicted as this class (count) |",
        "|---|---:|---:|---:|",
    ]
    first = sh["runs"][0]
    for cls in CLASSES:
        lines.append(f"| {cls} | {100 * first['clinic']['per_class'][cls]:.0f}% | "
                     f"{100 * first['hgtp']['per_class'][cls]:.0f}% | {first['hgtp']['predicted_counts'][cls]} |")
    lines += ["", "Examples: `simulator_examples.png` (rows = classes, column pairs = the same cell under clinic "
              "and hgtp).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train-per-class", type=int, default=150, help="clinic training cells per class")
    parser.add_argument("--test-per-class", type=int, default=50, help="held-out test cells per class")
    parser.add_argument("--epochs", type=int, default=10, help="CNN training epochs")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0], help="CNN seeds (one run each)")
    parser.add_argument("--speed-per-class", type=int, default=100, help="cells per class for the speed test")
    parser.add_argument("--size", type=int, default=96, help="image size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="simulator seed")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    args = parser.parse_args(argv)

    print("measuring rendering speed ...", flush=True)
    speed = measure_speed(args.speed_per_class, args.size, args.seed)
    print(f"  {speed['in_memory_images_per_s']:.0f} img/s in memory, {speed['with_png_images_per_s']:.0f} img/s "
          "with PNGs", flush=True)
    print("training the baseline CNN on clinic ...", flush=True)
    shift = measure_shift(args.train_per_class, args.test_per_class, args.epochs, args.size, args.seed,
                          args.train_seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    example_grid(args.out / "simulator_examples.png", 4, args.size, args.seed)

    result = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "command": shlex.join([sys.executable, *sys.argv] if argv is None else ["simulator_shift.py", *argv]),
        "machine": machine(opencv=cv2.__version__),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "speed": speed,
        "shift": shift,
        "targets": TARGETS,
        "targets_met": {"speed": speed["in_memory_images_per_s"] >= TARGETS["images_per_s"],
                        "clinic": shift["clinic_accuracy"] >= TARGETS["clinic_accuracy"],
                        "drop": shift["drop_points"] >= TARGETS["drop_points"]},
    }
    (args.out / "simulator_shift.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "simulator_shift.md").write_text(report(result))
    print(f"clinic {100 * shift['clinic_accuracy']:.1f}%  hgtp {100 * shift['hgtp_accuracy']:.1f}%  "
          f"drop {shift['drop_points']:.1f} points; wrote {args.out / 'simulator_shift.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
