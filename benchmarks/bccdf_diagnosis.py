"""Why does CycleGAN lose accuracy on bccd's whole fields (bccdf) when it gains on bccd's crops?

The same BCCD cells reach the PBC ResNet18 two ways: bccd (the dataset's ready-made crops, 1.2-1.9 cell diameters)
and bccdf (each cell located in its 640x480 field and framed at 2.8 diameters, PBC's framing). On bccd the CycleGAN
epochs score about 0.56-0.60 against 0.47 for the raw crops; on bccdf every epoch scores below the raw windows
(``cross_site.md``). Controlled swaps separate the suspects, each scored by the reported classifier on the
same test cells (paired bootstrap of the test images):

1. context: translate the whole field (what ``harmonize`` does) vs only the cell's framed window; with instance
   normalization a field full of red cells could normalize differently from a window;
2. the translator: the bccd-crop GAN vs the bccdf GAN, both applied to the bccdf windows;
3. the images: the bccdf GAN applied to the bccd crops;
4. the size of what is translated: only the part of the window the classifier reads (its 96 px centre at the
   common diameter, about 1.5 cell diameters, the size of the GAN's training crops) vs the whole window (2.8
   diameters, about 180 px); the bccd crops are about 90 px at that scale, so they are translated at the size the
   GAN was trained on;
5. a fix: harmonize's ``crop`` context (:class:`stainshift.harmonize.Context`: tiles of the training crop, each
   normalized by its own statistics) on the whole field vs its ``image`` context (the whole field at once);
6. the other: the ``cell`` context (crop context, then each located cell's crop-size window translated alone and
   pasted over) vs the ``image`` context.

``--split val`` measures the same on the validation cells: harmonize's default context is chosen there, not on the
test cells the benchmark reports. Writes ``bccdf_diagnosis[_val].md`` (``.json``, ``.jpg``).

Seed-0 `cpu` runs (``cpu-s0``), epochs 1, 3, 5; carry mode (``keep_detail``), as harmonize does by default, at
the scale each GAN was trained with. Each question is one paired comparison (means over the three epochs, the
bootstrap resamples test images; three questions, so a CI near 0 is weak evidence).

    python benchmarks/bccdf_diagnosis.py

Writes ``results/bccdf_diagnosis.md``, ``.json`` and ``bccdf_diagnosis.jpg``. Refuses a dirty tree
(``--allow-dirty``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from stainshift import runs
from stainshift.atomic import atomic_write_text
from stainshift.classify.evaluate import evaluate_arrays
from stainshift.classify.models import load_classifier
from stainshift.data.datasets import center_crop as centre_crop
from stainshift.data.domains import crop_box, read_sample
from stainshift.data.io import read_image, write_image
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.grids import image_grid
from stainshift.harmonize import Context, back_to_size, cell_centres, context_crop, source_scale, translate_one
from stainshift.models.registry import load_epoch
from stainshift.paired_stats import PairedBootstrap
from stainshift.project import load_project
from stainshift.provenance import record, require_clean

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CLASSIFIER = "pbc-resnet18-group"
EPOCHS = (1, 3, 5)


def translate(model, image: np.ndarray, scale: float, crop: int | None = None, centres=None) -> np.ndarray:
    """``image`` harmonized as :func:`stainshift.harmonize.harmonize` does (keep-detail; ``crop``: the crop
    context's tile size, None for the image context; ``centres``: the cells, full-size px, for the cell context)."""
    small, out = translate_one(model, image, scale, crop=crop, centres=centres)
    return back_to_size(image, small, out, keep_detail=True)


def classifier_view(image: np.ndarray, scale: float, size: int) -> np.ndarray:
    """The centre of ``image`` that the classifier reads after rescaling by ``scale`` and cropping ``size`` px
    (2 px of margin so the rescaled crop stays inside it)."""
    return centre_crop(image, min(min(image.shape[:2]), int(np.ceil(size / scale)) + 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=str(HERE / "real_sites.toml"))
    parser.add_argument("--epochs", default=",".join(map(str, EPOCHS)), help="kept epochs to translate with")
    parser.add_argument("--split", default="test", choices=("test", "val"), help="which cells are scored")
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    require_clean(args.allow_dirty, "benchmarks/bccdf_diagnosis.py")
    epochs = tuple(int(e) for e in args.epochs.split(","))
    meta = record(vars(args))
    torch.set_num_threads(1)
    start = time.perf_counter()
    project = load_project(args.project)
    clf = load_classifier(runs.find_classifier(project.runs, CLASSIFIER))
    cells = {d: [s for s in samples_in(project, d, args.split) if s.label in clf.classes] for d in ("bccdf", "bccd")}
    scales = {d: scale_factor(project, d) for d in cells}
    raw = {d: [read_sample(s) for s in cells[d]] for d in cells}
    gans = {d: runs.runs_by_seed(project, d, "pbc", "cyclegan", "cpu-")[0] for d in cells}

    def score(domain: str, images: list[np.ndarray]) -> np.ndarray:
        report = evaluate_arrays(clf, images, [s.label for s in cells[domain]], scale=scales[domain], n_boot=0)
        return np.asarray(report.y_true) == np.asarray(report.y_pred)

    rows: list[dict] = []
    raw_correct = {d: score(d, raw[d]) for d in cells}
    by: dict[tuple[str, str], list[np.ndarray]] = {}
    examples = {"bccdf raw window": raw["bccdf"][:6], "bccd raw crop": raw["bccd"][:6]}
    views = [classifier_view(r, scales["bccdf"], clf.input_size) for r in raw["bccdf"]]
    field_centres = cell_centres(project, "bccdf", [s.key for s in cells["bccdf"]], 1.0)  # every cell, full-size px
    for epoch in epochs:
        models, trained, crops = {}, {}, {}
        for d, run in gans.items():
            models[d], meta_d = load_epoch(runs.epoch_file(run, epoch))
            models[d].eval()
            trained[d] = meta_d
            crops[d] = context_crop(Context.CROP, models[d], meta_d)

        def scaled(gan: str, images: str, trained: dict = trained) -> float:
            # the images' own cells at the common diameter: the scale harmonize uses for a GAN trained on them
            return source_scale(project, images, trained[gan]) if gan == images else scales[images]

        fields = [crop_box(translate(models["bccdf"], read_image(s.path), scaled("bccdf", "bccdf")), s.box)
                  for s in cells["bccdf"]]
        conditions = {
            ("bccdf", "bccdf GAN, whole field"): fields,
            ("bccdf", "bccdf GAN, window only"): [translate(models["bccdf"], r, scaled("bccdf", "bccdf"))
                                                  for r in raw["bccdf"]],
            ("bccdf", "bccd GAN, window only"): [translate(models["bccd"], r, scaled("bccd", "bccdf"))
                                                 for r in raw["bccdf"]],
            ("bccdf", "bccdf GAN, classifier's view only"): [
                translate(models["bccdf"], view, scaled("bccdf", "bccdf")) for view in views],
            ("bccdf", "bccd GAN, classifier's view only"): [
                translate(models["bccd"], view, scaled("bccd", "bccdf")) for view in views],
            ("bccdf", "bccdf GAN, whole field, crop context"): [
                crop_box(translate(models["bccdf"], read_image(s.path), scaled("bccdf", "bccdf"), crops["bccdf"]),
                         s.box) for s in cells["bccdf"]],
            ("bccdf", "bccdf GAN, whole field, cell context"): [
                crop_box(translate(models["bccdf"], read_image(s.path), scaled("bccdf", "bccdf"), crops["bccdf"],
                                   centres), s.box) for s, centres in zip(cells["bccdf"], field_centres, strict=True)],
            ("bccd", "bccd GAN, crop"): [translate(models["bccd"], r, scaled("bccd", "bccd")) for r in raw["bccd"]],
            ("bccd", "bccdf GAN, crop"): [translate(models["bccdf"], r, scaled("bccdf", "bccd")) for r in raw["bccd"]],
        }
        for (domain, name), images in conditions.items():
            hits = score(domain, images)
            by.setdefault((domain, name), []).append(hits)
            rows.append({"images": domain, "condition": name, "epoch": epoch, "accuracy": float(hits.mean())})
            if epoch == epochs[0]:
                examples[f"{name} e{epoch}"] = images[:6]
        print(f"epoch {epoch} done ({time.perf_counter() - start:.0f} s)", flush=True)

    def paired(domain: str, a: str, b: str | None) -> list:
        boot = PairedBootstrap(len(cells[domain]), seed=0)
        x = np.array(by[(domain, a)], dtype=float)
        y = np.array([raw_correct[domain]] * len(epochs), dtype=float) if b is None else np.array(by[(domain, b)],
                                                                                                      dtype=float)
        d = boot.difference(x, y)
        return [d.value, d.low, d.high, d.verdict()]

    questions = [("1. context (bccdf images)", "bccdf", "bccdf GAN, whole field", "bccdf GAN, window only"),
                 ("2. translator (bccdf windows)", "bccdf", "bccd GAN, window only", "bccdf GAN, window only"),
                 ("3. images (bccd crops)", "bccd", "bccdf GAN, crop", "bccd GAN, crop"),
                 ("4. size translated (bccdf windows)", "bccdf", "bccdf GAN, classifier's view only",
                  "bccdf GAN, window only"),
                 ("5. crop context (bccdf fields)", "bccdf", "bccdf GAN, whole field, crop context",
                  "bccdf GAN, whole field"),
                 ("6. cell context (bccdf fields)", "bccdf", "bccdf GAN, whole field, cell context",
                  "bccdf GAN, whole field")]
    answers = [{"question": q, "images": d, "a": a, "b": b, "a_minus_b": paired(d, a, b)} for q, d, a, b in questions]
    versus_raw = [{"images": d, "condition": n, "minus_raw": paired(d, n, None)} for d, n in by]
    meta["seconds"] = time.perf_counter() - start
    stem = "bccdf_diagnosis" + ("" if args.split == "test" else f"_{args.split}")
    write_image(RESULTS / f"{stem}.jpg", image_grid(list(examples.values()), cell=128,
                                                             row_labels=list(examples), label_width=250))
    atomic_write_text(RESULTS / f"{stem}.json", json.dumps(
        {"meta": meta, "rows": rows, "questions": answers, "versus_raw": versus_raw}, indent=2, default=str))
    m = meta["machine"]
    lines = ["# bccd whole fields vs crops: where CycleGAN loses accuracy", "",
             f"- started {meta['started']}, commit {meta['commit']}{' (DIRTY TREE)' if meta['dirty'] else ''}, "
             f"{meta['seconds']:.0f} s, machine: {m['cpu']}, {m['cores']} cores, CPU only",
             f"- command: `{' '.join(sys.argv)}`",
             f"- seed-0 `cpu` CycleGAN runs of bccd and bccdf -> pbc, epochs {', '.join(map(str, epochs))}; "
             f"reported classifier `{CLASSIFIER}`; {args.split} cells: bccdf {len(cells['bccdf'])}, "
             f"bccd {len(cells['bccd'])}",
             f"- raw accuracy: bccdf windows {raw_correct['bccdf'].mean():.3f}, "
             f"bccd crops {raw_correct['bccd'].mean():.3f}", "",
             "| question | images | a | b | a - b, mean over the epochs (paired 95% CI) |", "|---|---|---|---|---|"]
    for q in answers:
        v, lo, hi, verdict = q["a_minus_b"]
        lines.append(f"| {q['question']} | {q['images']} | {q['a']} | {q['b']} | {v:+.3f} ({lo:+.3f} to {hi:+.3f}) "
                     f"{verdict} |")
    lines += ["", "| images | translation | " + " | ".join(f"e{e}" for e in epochs) + " | minus raw, mean over the "
              "epochs (paired 95% CI) |", "|---|---|" + "---:|" * len(epochs) + "---|"]
    for item in versus_raw:
        accs = [r["accuracy"] for r in rows if (r["images"], r["condition"]) == (item["images"], item["condition"])]
        v, lo, hi, verdict = item["minus_raw"]
        lines.append(f"| {item['images']} | {item['condition']} | " + " | ".join(f"{a:.3f}" for a in accs)
                     + f" | {v:+.3f} ({lo:+.3f} to {hi:+.3f}) {verdict} |")
    lines += ["", f"Rows: the first six {args.split} cells, raw and as each translation (epoch {epochs[0]}) gives "
              "them.", "",
              f"![bccdf diagnosis]({stem}.jpg)", ""]
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
