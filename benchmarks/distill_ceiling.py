"""How close can any pixel-wise student get to its CycleGAN teacher? (issue 16: the distillation accuracy aim)

    python benchmarks/distill_ceiling.py --project benchmarks/runs/recipes/stainshift.toml   # after recipes.py

The `distill` student scored 7-10 points below its teacher (``results/distill.md``). This asks whether a better
pixel-wise student could close that, or whether no colour-to-colour map can. Everything runs at the teacher's scale
(the common scale) on the source's splits, with one classifier and one teacher:

- teacher: the CycleGAN epoch the label-free rule chose (``--epoch`` to name another);
- student: ``stainshift distill`` of that epoch (its ``cpu`` preset, trained here or reused);
- table fitted on train: for every colour bin (``--bins`` per axis, nearest bin) the mean of the teacher's output
  over the source's train pixels of that colour: the least-squares best pixel-wise map on the data a student sees;
  bins no train pixel fell in take the student's output;
- table fitted on test: the same, fitted on the test images themselves. No deployable student can do better than
  this with one colour map: it is a diagnostic bound, like the fine-tuned row of the benchmark, never a method;
- per-image tables: each test image recoloured by a table fitted on that image's own pixels and the teacher's
  output for them (empty bins: the train table). Still pixel-wise within an image, so structure-safe; it asks
  whether the teacher's images differ from one colour map because it recolours each image differently;
- conditioned student: a deployable form of that: ``stainshift distill --set condition=image-stats``, the 1x1
  network fed each pixel's colour and its image's colour mean and SD (1,475 parameters), ``cpu`` preset for
  ``--conditioned-epochs`` (50: chosen by the distance to the teacher on the source's validation images).

Accuracy and macro-F1 of the classifier on jtsc's test split with paired bootstrap CIs against the teacher; mean
absolute difference to the teacher's output (8-bit levels) and grayscale SSIM to it. Writes
``results/distill_ceiling.md`` and ``.json`` (provenance read at the start).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from provenance import record, require_clean  # noqa: E402

from stainshift import runs  # noqa: E402
from stainshift.classify.evaluate import evaluate_arrays  # noqa: E402
from stainshift.data.datasets import rescale, to_batch  # noqa: E402
from stainshift.data.domains import read_sample  # noqa: E402
from stainshift.data.splits import samples_in  # noqa: E402
from stainshift.distill import DistillRequest, distill, student_run  # noqa: E402
from stainshift.harmonize import source_scale, translate_batch  # noqa: E402
from stainshift.metrics import ssim_gray  # noqa: E402
from stainshift.models.registry import load_epoch  # noqa: E402
from stainshift.paired_stats import PairedBootstrap  # noqa: E402
from stainshift.project import load_project  # noqa: E402

RESULTS = HERE / "results"
CONDITIONED = "image-stats"


def bin_index(x: torch.Tensor, bins: int) -> np.ndarray:
    """Nearest colour bin of every pixel of a 3 x H x W [0, 1] image: a flat index into bins^3."""
    q = (x * (bins - 1)).round().long().clamp_(0, bins - 1).numpy()
    return ((q[0] * bins + q[1]) * bins + q[2]).ravel()


class ColourTable:
    """Per-bin running sums of the teacher's output colours: the mean is the least-squares pixel-wise map."""

    def __init__(self, bins: int) -> None:
        self.bins = bins
        self.sums = np.zeros((bins ** 3, 3))
        self.counts = np.zeros(bins ** 3)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        idx = bin_index(x, self.bins)
        self.counts += np.bincount(idx, minlength=self.counts.size)
        for c in range(3):
            self.sums[:, c] += np.bincount(idx, weights=y[c].numpy().ravel(), minlength=self.counts.size)

    def apply(self, x: torch.Tensor, fallback: np.ndarray) -> tuple[torch.Tensor, float]:
        """The table's colours for ``x`` (3 x H x W); pixels of empty bins take ``fallback`` (H*W x 3).
        Returns the image and the fraction of its pixels that fell back."""
        idx = bin_index(x, self.bins)
        seen = self.counts[idx] > 0
        out = fallback.copy()
        out[seen] = self.sums[idx[seen]] / self.counts[idx[seen], None]
        return torch.from_numpy(out.T.reshape(x.shape).astype(np.float32)), float(1 - seen.mean())


def as_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", default=str(HERE / "runs" / "recipes" / "stainshift.toml"))
    parser.add_argument("--src", default="jtsc")
    parser.add_argument("--dst", default="pbc")
    parser.add_argument("--epoch", default="best", help="the teacher's epoch: best (label-free rule's) or N")
    parser.add_argument("--classifier", default="pbc-resnet18-group",
                        help="a classifier of the project (runs/classifiers/NAME), or a model.pt path")
    parser.add_argument("--bins", type=int, default=33, help="colour bins per axis of the fitted tables")
    parser.add_argument("--conditioned-epochs", type=int, default=50,
                        help="the conditioned student's epochs (the cpu preset's 10 left it 1 level further from "
                             "the teacher on the source's validation images than 50)")
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--allow-dirty", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    require_clean(args.allow_dirty, "distill_ceiling.py")
    prov = record({k: v for k, v in vars(args).items() if k not in ("allow_dirty", "quiet")})
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    t0 = time.time()
    project = load_project(args.project)
    epoch: str | int = args.epoch if args.epoch == "best" else int(args.epoch)
    rule = "label-free" if epoch == "best" else None
    teacher_file, teacher_epoch, _ = runs.resolve_epoch(project, args.src, args.dst, "cyclegan", epoch, None, rule)
    students = {}
    for condition in ("none", CONDITIONED):
        request = DistillRequest(args.src, args.dst, epoch=teacher_epoch, progress=not args.quiet,
                                 overrides={} if condition == "none" else
                                 {"condition": condition, "epochs": args.conditioned_epochs,
                                  "keep_epochs": (args.conditioned_epochs,)})
        resume = student_run(project, request).exists()  # reuse a finished one
        students[condition] = distill(project, replace(request, resume=resume)).run_dir
    plain_run = students["none"]
    teacher, meta = load_epoch(teacher_file)
    student, conditioned = (load_epoch(runs.epoch_file(run, runs.kept_epochs(run)[-1]))[0].eval()
                            for run in students.values())
    teacher.eval()
    scale = source_scale(project, args.src, meta)
    classifier = Path(args.classifier)
    if not classifier.exists():
        classifier = runs.classifiers_dir(project) / args.classifier / "model.pt"

    def translate(sample) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = to_batch([rescale(read_sample(sample), scale)])
        with torch.inference_mode():
            return x[0], translate_batch(teacher, x)[0], translate_batch(student, x)[0]

    train_table = ColourTable(args.bins)
    for sample in samples_in(project, args.src, "train"):
        x, y, _ = translate(sample)
        train_table.add(x, y)
    test = samples_in(project, args.src, "test")
    outputs: dict[str, list[np.ndarray]] = {k: [] for k in
                                            ("original", "teacher", "student", "train table", "test table",
                                             "per-image tables", "conditioned student")}
    translated = [translate(s) for s in test]
    test_table = ColourTable(args.bins)
    for x, y, _ in translated:
        test_table.add(x, y)
    fallback_share = {"train table": [], "per-image tables": []}
    mae: dict[str, list[float]] = {k: [] for k in outputs if k not in ("teacher",)}
    ssim: dict[str, list[float]] = {k: [] for k in mae}
    for x, y, s in translated:
        by_student = s.permute(1, 2, 0).reshape(-1, 3).numpy().astype(np.float64)
        train_y, share = train_table.apply(x, by_student)
        fallback_share["train table"].append(share)
        own = ColourTable(args.bins)
        own.add(x, y)
        image_y, own_share = own.apply(x, train_y.permute(1, 2, 0).reshape(-1, 3).numpy().astype(np.float64))
        fallback_share["per-image tables"].append(own_share)
        test_y, _ = test_table.apply(x, by_student)
        made = {"original": x, "teacher": y, "student": s, "train table": train_y, "test table": test_y,
                "per-image tables": image_y, "conditioned student": conditioned(x[None])[0]}
        for name, image in made.items():
            outputs[name].append(as_uint8(image))
            if name in mae:
                mae[name].append(float((image.clamp(0, 1) - y).abs().mean() * 255))
                ssim[name].append(float(ssim_gray(image.clamp(0, 1)[None], y[None])))
    labels = [s.label for s in test]
    reports = {name: evaluate_arrays(classifier, images, labels, n_boot=args.boot)
               for name, images in outputs.items()}
    correct = {name: np.array([t == p for t, p in zip(r.y_true, r.y_pred, strict=True)], float)
               for name, r in reports.items()}
    boot = PairedBootstrap(len(reports["teacher"].y_true), n_boot=args.boot, seed=0)  # images it could score
    rows = []
    for name, r in reports.items():
        acc = boot.accuracy(correct[name])
        diff = boot.difference(correct[name], correct["teacher"]) if name != "teacher" else None
        # the conditioned student is a candidate replacement for the plain one: pair it with that, too
        vs_student = boot.difference(correct[name], correct["student"]) if name == "conditioned student" else None
        rows.append({"condition": name, "accuracy": acc.value, "low": acc.low, "high": acc.high,
                     "macro_f1": r.macro_f1,
                     "vs_teacher": None if diff is None else diff.summary(),
                     "vs_student": None if vs_student is None else vs_student.summary(),
                     "mae_to_teacher": float(np.mean(mae[name])) if name in mae else 0.0,
                     "ssim_to_teacher": float(np.mean(ssim[name])) if name in ssim else 1.0})
    result = {"provenance": prov, "teacher": {"file": str(teacher_file), "epoch": teacher_epoch},
              "student_run": plain_run.name, "conditioned_run": students[CONDITIONED].name,
              "classifier": str(classifier), "scale": scale,
              "n_train": len(samples_in(project, args.src, "train")), "n_test": len(test),
              "fallback_share": {k: float(np.mean(v)) for k, v in fallback_share.items()},
              "rows": rows, "seconds": round(time.time() - t0, 1)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distill_ceiling.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "distill_ceiling.md").write_text(markdown(result, args))
    print((RESULTS / "distill_ceiling.md").read_text())


def markdown(result: dict, args: argparse.Namespace) -> str:
    p = result["provenance"]
    lines = [
        f"# How close can a pixel-wise student get to its teacher? ({args.src} -> {args.dst})", "",
        f"- started {p['started']}, commit {p['commit']} (dirty: {p['dirty']}), machine {p['machine']['cpu']}, "
        f"{result['seconds']:.0f} s; command `{p.get('command', 'distill_ceiling.py')}`",
        f"- teacher: CycleGAN epoch {result['teacher']['epoch']} "
        f"(`{Path(result['teacher']['file']).parent.parent.name}`, "
        f"{'the label-free rule' if args.epoch == 'best' else 'named'}); student: `{result['student_run']}` "
        "(`stainshift distill`, `cpu` preset)",
        f"- classifier `{Path(result['classifier']).parent.name}`; {result['n_test']} test images of {args.src}, "
        f"all at the teacher's scale ({result['scale']:.3f}); tables of {args.bins}^3 colour bins fitted on the "
        f"{result['n_train']} train images (empty bins for "
        f"{100 * result['fallback_share']['train table']:.2f}% of test pixels: the student's colour there)",
        "- paired bootstrap of the test images against the teacher; 'test table' is fitted on the test images "
        "themselves (a bound, not a method); 'per-image tables' recolour each test image by a table fitted on the "
        "teacher's output for that image (an oracle bound, not a method); 'conditioned student' is "
        f"`stainshift distill --set condition={CONDITIONED}` (`{result['conditioned_run']}`): the 1x1 network also "
        "fed its image's colour mean and SD, `cpu` preset with "
        f"--epochs {args.conditioned_epochs}", "",
        "| condition | accuracy (95% CI) | macro-F1 | vs teacher (95% CI) | mean abs to teacher (levels) | "
        "grayscale SSIM to teacher |",
        "|---|---|---:|---|---:|---:|"]
    for r in result["rows"]:
        vs = "" if r["vs_teacher"] is None else (f"{r['vs_teacher']['value']:+.3f} ({r['vs_teacher']['low']:+.3f} to "
                                                 f"{r['vs_teacher']['high']:+.3f}) {r['vs_teacher']['verdict']}")
        lines.append(f"| {r['condition']} | {r['accuracy']:.3f} ({r['low']:.3f} to {r['high']:.3f}) | "
                     f"{r['macro_f1']:.3f} | {vs} | {r['mae_to_teacher']:.2f} | {r['ssim_to_teacher']:.3f} |")
    for r in result["rows"]:
        if r.get("vs_student"):
            d = r["vs_student"]
            lines.append(f"\n{r['condition']} vs the plain student (paired): {d['value']:+.3f} ({d['low']:+.3f} to "
                         f"{d['high']:+.3f}) {d['verdict']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
