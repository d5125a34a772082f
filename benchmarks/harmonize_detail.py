"""Harmonized images at full resolution: enlarging the GAN's small output vs carrying its colour change (keep_detail).

For each source of ``real_sites.toml`` and each CycleGAN seed run (``cpu-s0..2``, trained as in
``benchmarks/cross_site.py``), at the epoch its labelled selection chose: every test image of the source is
translated at the common 64 px cell diameter as ``harmonize`` does, then brought back to its own size two ways,

- ``resize``: the small output enlarged (what harmonize did before ``keep_detail``);
- ``carry``: the input plus the translation's change, blurred by ``CHANGE_BLUR`` px and enlarged
  (:func:`stainshift.harmonize.carry_change`, the new default).

Measured on the full-size images: sharpness (variance of the Laplacian of the gray image) as a ratio to the input's,
SSIM with the input (gray, window 11), the colour distance to PBC (sliced Wasserstein, L*a*b*), a checkerboard score
(spectral energy at the periods 2 and 4 px of the stride-2 upsamplings, at the common scale, over the image's
high-frequency median), and the accuracy of the reported PBC classifier (``pbc-resnet18-group``) on them, paired
(one bootstrap of the test images for both). Refuses a dirty tree (``--allow-dirty``).

    python benchmarks/harmonize_detail.py [--sources jtsc,bccd,cvblog]

Writes ``benchmarks/results/harmonize_detail.md``, ``.json`` and ``harmonize_detail.png``.
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
from stainshift.classify.evaluate import evaluate_arrays
from stainshift.data.datasets import rescale, to_batch
from stainshift.data.domains import read_sample
from stainshift.data.io import write_image
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.grids import image_grid
from stainshift.harmonize import CHANGE_BLUR, back_to_size, source_scale, translate_one
from stainshift.metrics import lab_pixels, sliced_wasserstein, ssim_gray
from stainshift.models.registry import load_epoch
from stainshift.paired_stats import PairedBootstrap
from stainshift.project import load_project
from stainshift.provenance import record, require_clean

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET = "pbc"
CLASSIFIER = "pbc-resnet18-group"
MODES = ("resize", "carry")


def sharpness(image: np.ndarray) -> float:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(gray, cv2.CV_32F).var())


def checkerboard(image: np.ndarray) -> float:
    """Energy at the 2- and 4-px periods (both axes) over the median high-frequency magnitude, of the gray image."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = (s - s % 4 for s in gray.shape)
    spectrum = np.abs(np.fft.fft2(gray[:h, :w] - gray[:h, :w].mean()))
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    peaks = [spectrum[(np.isclose(np.abs(fy), a) & np.isclose(np.abs(fx), b))].mean()
             for a, b in ((0.5, 0), (0, 0.5), (0.5, 0.5), (0.25, 0), (0, 0.25), (0.25, 0.25))]
    high = spectrum[np.hypot(fy, fx) > 0.2]
    return float(np.mean(peaks) / (np.median(high) + 1e-6))


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(ssim_gray(to_batch([a]), to_batch([b]))[0])


def measure_run(project, src: str, run: Path, samples, clf) -> dict:
    chosen = runs.selection_record(run, "labelled", src)
    epoch = chosen["epoch"] if chosen else runs.kept_epochs(run)[0]
    translator, meta = load_epoch(runs.epoch_file(run, epoch))
    translator.eval()
    scale = source_scale(project, src, meta)
    out: dict[str, dict[str, list]] = {m: {"images": [], "sharp": [], "ssim": [], "checker": []} for m in MODES}
    inputs_sharp, inputs_checker = [], []
    for sample in samples:
        original = read_sample(sample)
        small, done = translate_one(translator, original, scale)
        inputs_sharp.append(sharpness(original))
        inputs_checker.append(checkerboard(small))
        for mode in MODES:
            full = back_to_size(original, small, done, keep_detail=mode == "carry")
            out[mode]["images"].append(full)
            out[mode]["sharp"].append(sharpness(full) / max(inputs_sharp[-1], 1e-6))
            out[mode]["ssim"].append(_ssim(full, original))
            out[mode]["checker"].append(checkerboard(rescale(full, scale)))  # both modes at the common scale
    labels = [s.label for s in samples]
    target = lab_pixels([to_batch([read_sample(s)])[0] for s in samples_in(project, TARGET, "val")[:100]])
    result = {"run": run.name, "epoch": epoch, "scale": scale, "input_checker": float(np.median(inputs_checker))}
    correct = {}
    for mode in MODES:
        images = out[mode]["images"]
        report = evaluate_arrays(clf, images, labels, scale=scale_factor(project, src), n_boot=10)
        correct[mode] = np.asarray(report.y_true) == np.asarray(report.y_pred)
        colour = sliced_wasserstein(lab_pixels([to_batch([i])[0] for i in images]), target)
        result[mode] = {"sharpness_ratio": float(np.median(out[mode]["sharp"])),
                        "ssim": float(np.mean(out[mode]["ssim"])),
                        "checkerboard": float(np.median(out[mode]["checker"])),
                        "colour_to_pbc": colour, "accuracy": float(correct[mode].mean()),
                        "macro_f1": float(report.macro_f1)}
    result["correct"] = {m: correct[m].tolist() for m in MODES}
    result["examples"] = {m: out[m]["images"][:4] for m in MODES}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=str(HERE / "real_sites.toml"))
    parser.add_argument("--sources", default="jtsc,bccd,cvblog")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    require_clean(args.allow_dirty, "benchmarks/harmonize_detail.py")
    meta = record(vars(args))
    torch.set_num_threads(1)
    start = time.perf_counter()
    project = load_project(args.project)
    from stainshift.classify.models import load_classifier

    clf = load_classifier(runs.find_classifier(project.runs, CLASSIFIER))
    per_source, grid_rows, grid_labels = {}, [], []
    for src in args.sources.split(","):
        samples = [s for s in samples_in(project, src, "test") if s.label in clf.classes]
        seeds = runs.runs_by_seed(project, src, TARGET, "cyclegan", "cpu-")
        results = [measure_run(project, src, run, samples, clf) for run in seeds.values()]
        boot = PairedBootstrap(len(samples), seed=0)
        a = np.array([r["correct"]["carry"] for r in results])
        b = np.array([r["correct"]["resize"] for r in results])
        diff = boot.difference(a, b)
        per_source[src] = {"n": len(samples), "runs": [{k: v for k, v in r.items() if k not in ("correct", "examples")}
                                                        for r in results],
                           "accuracy_carry_minus_resize": [diff.value, diff.low, diff.high, diff.verdict()]}
        originals = [read_sample(s) for s in samples[:4]]
        grid_rows += [originals, results[0]["examples"]["resize"], results[0]["examples"]["carry"]]
        grid_labels += [f"{src} input", f"{src} resize", f"{src} carry"]
        print(f"{src}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    meta["seconds"] = time.perf_counter() - start
    write_image(RESULTS / "harmonize_detail.png", image_grid(grid_rows, cell=160, row_labels=grid_labels,
                                                             label_width=120))
    (RESULTS / "harmonize_detail.json").write_text(json.dumps({"meta": meta, "sources": per_source}, indent=2,
                                                              default=str))
    m = meta["machine"]
    lines = ["# Harmonized images at full resolution: enlarge the small output, or carry its change", "",
             f"- started {meta['started']}, commit {meta['commit']}{' (DIRTY TREE)' if meta['dirty'] else ''}, "
             f"{meta['seconds']:.0f} s, machine: {m['cpu']}, {m['cores']} cores, CPU only",
             f"- command: `{' '.join(sys.argv)}`",
             "- CycleGAN `cpu` runs cpu-s0..2 of each source -> pbc, at the epoch each run's labelled selection "
             f"chose; every test image of the source; change blur {CHANGE_BLUR} px at the common scale",
             "- sharpness: variance of the Laplacian, output over input (1 = as sharp as the input), median; SSIM: "
             "output vs input, gray, full size, mean; checkerboard: spectral energy at 2/4-px periods over the "
             "high-frequency median, at the common scale (the input's own value in brackets); colour: sliced "
             "Wasserstein to PBC validation pixels (L*a*b*); accuracy: the reported PBC ResNet18",
             "",
             "| source | run (epoch) | mode | sharpness | SSIM | checkerboard | colour to PBC | accuracy | macro-F1 |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for src, part in per_source.items():
        for r in part["runs"]:
            for mode in MODES:
                v = r[mode]
                lines.append(f"| {src} | {r['run']} (e{r['epoch']}) | {mode} | {v['sharpness_ratio']:.2f} | "
                             f"{v['ssim']:.3f} | {v['checkerboard']:.2f} ({r['input_checker']:.2f}) | "
                             f"{v['colour_to_pbc']:.2f} | {v['accuracy']:.3f} | {v['macro_f1']:.3f} |")
    lines += ["", "Accuracy, carry minus resize (mean over the seeds' runs, paired bootstrap of the test images):", "",
              "| source | test images | difference (95% CI) | verdict |", "|---|---:|---|---|"]
    for src, part in per_source.items():
        v, lo, hi, verdict = part["accuracy_carry_minus_resize"]
        lines.append(f"| {src} | {part['n']} | {v:+.3f} ({lo:+.3f} to {hi:+.3f}) | {verdict} |")
    lines += ["", "First four test cells of each source (seed 0's run): input, enlarged output, carried change.", "",
              "![detail](harmonize_detail.png)", ""]
    (RESULTS / "harmonize_detail.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
