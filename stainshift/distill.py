"""``distill``: learn a chosen harmonizer's colour mapping with a pixel-wise student, for fast and safe deployment.

The teacher is a kept epoch of a learned method (by default the epoch ``stainshift select`` chose for cyclegan).
The student (:mod:`stainshift.models.distilled`) trains like any model of the registry, in its own run folder
(``runs/<src>_to_<dst>/distilled/<teacher>-e<N>-<preset>-s<seed>-<hash>/``), so it resumes exactly, is tracked, and
``harmonize --method distilled``, ``select`` and ``benchmark`` treat it as one more learned method. Afterwards,
on the source's validation images at the common scale, it records in ``distill.json``:

- how far the colour table is from the network it was baked from (8-bit levels: max and mean),
- how far the student is from its teacher (mean absolute difference, grayscale SSIM),

and writes ``selected.json`` so ``--epoch best`` serves the student's last epoch (its teacher already was the
selected one; the student's epochs only converge).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stainshift import runs
from stainshift.atomic import atomic_write_text
from stainshift.data.datasets import rescale, to_batch
from stainshift.data.domains import read_sample
from stainshift.data.splits import samples_in
from stainshift.errors import StainshiftError
from stainshift.harmonize import source_scale, translate_batch
from stainshift.metrics import ssim_gray
from stainshift.models.kinds import Kind
from stainshift.models.registry import entry, load_epoch, names
from stainshift.project import Project
from stainshift.train import checkpoints
from stainshift.train.loop import TrainRequest, train

STUDENT = "distilled"
RECORD = "distill.json"


@dataclass(frozen=True)
class DistillRequest:
    src: str
    dst: str
    teacher: str = "cyclegan"             # the learned method whose epoch is distilled
    epoch: str | int = "best"             # of the teacher: best (its selection), last or N
    rule: str | None = None               # with epoch best: that rule's newest selection (None: selected.json)
    teacher_run: str | None = None        # the teacher's run (default: the serving one)
    preset: str = "cpu"
    seed: int | None = None               # the student's; None: the teacher run's (students pair with teachers)
    overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    check_images: int = 32                # source validation images for the checks
    device: str = "auto"
    progress: bool = True
    track: bool = True


@dataclass
class DistillResult:
    run_dir: Path
    epoch: int
    teacher: dict[str, Any]
    checks: dict[str, float]


def student_run_id(method: str, epoch: int, preset: str, seed: int, teacher_sha: str, condition: str = "none") -> str:
    """E.g. ``cyclegan-e3-cpu-s0-1a2b3c4d``: the teacher's method, epoch and file hash, the student's preset and
    seed (and ``-image-stats`` for a conditioned student); deterministic, so a rerun finds (and with --resume
    continues) the same student."""
    return f"{method}-e{epoch}-{preset}-s{seed}-{teacher_sha[:8]}" + ("" if condition == "none" else f"-{condition}")


def _teacher(project: Project, r: DistillRequest) -> tuple[Path, int, dict | None, int, str]:
    """The teacher's epoch file, epoch, selection record, the student's seed and the student's run id."""
    path, epoch, selection = runs.resolve_epoch(project, r.src, r.dst, r.teacher, r.epoch, r.teacher_run, r.rule)
    seed = r.seed if r.seed is not None else int(runs.read_config(path.parent.parent).get("seed", 0))
    condition = str(r.overrides.get("condition", "none"))
    return path, epoch, selection, seed, student_run_id(r.teacher, epoch, r.preset, seed, checkpoints.file_hash(path),
                                                        condition)


def student_run(project: Project, request: DistillRequest) -> Path:
    """The run folder ``distill`` trains (or resumes) for ``request``."""
    return runs.method_dir(project, request.src, request.dst, STUDENT) / _teacher(project, request)[4]


def distill(project: Project, request: DistillRequest) -> DistillResult:
    """Train the student of the teacher epoch, check it, and make it the pair's ``distilled`` harmonizer."""
    r = request
    found = entry(r.teacher)
    if r.teacher == STUDENT or found.kind is not Kind.LEARNED or not found.translates_images:
        learned = [m for m in names(Kind.LEARNED, images_only=True) if m != STUDENT]
        raise StainshiftError(f"--teacher {r.teacher}: distill learns from a trained image harmonizer "
                              f"({', '.join(learned)}); classical methods are already pixel-wise")
    if r.check_images < 1:
        raise StainshiftError(f"--check-images {r.check_images}: use 1 or more")
    path, epoch, selection, seed, run_id = _teacher(project, r)
    teacher = {"method": r.teacher, "run": path.parent.parent.name, "epoch": epoch, "file": str(path),
               "sha256": checkpoints.file_hash(path),
               "selection": None if selection is None else {k: selection.get(k) for k in ("rule", "classifier")}}
    result = train(project, TrainRequest(
        r.src, r.dst, method=STUDENT, preset=r.preset, seed=seed, overrides={**r.overrides, "teacher": str(path)},
        run_id=run_id, resume=r.resume, device=r.device, progress=r.progress, track=r.track))
    run = result.run_dir
    last = runs.kept_epochs(run)[-1]
    checks = check_student(project, r.src, path, runs.epoch_file(run, last), r.check_images, project.seed)
    record = {"teacher": teacher, "student_epoch": last, "checks": checks,
              "options": runs.read_config(run)["options"]}
    atomic_write_text(run / RECORD, json.dumps(record, indent=2))
    selected = {"epoch": last, "rule": "distilled", "teacher": teacher,
                "reason": f"the student's last epoch; its teacher is {r.teacher} epoch {epoch} of {teacher['run']}"
                          + (f" ({selection['rule']} rule)" if selection else "")}
    atomic_write_text(runs.selected_file(run), json.dumps(selected, indent=2))
    return DistillResult(run, last, teacher, checks)


@torch.inference_mode()
def check_student(project: Project, src: str, teacher_file: Path, student_file: Path, n_images: int,
                  seed: int = 0) -> dict[str, float]:
    """Colour table vs network, and student vs teacher, on up to ``n_images`` of the source's validation split
    (train split when it has none) at the scale the teacher translates them."""
    teacher, meta = load_epoch(teacher_file)
    student = load_epoch(student_file)[0]
    samples = samples_in(project, src, "val") or samples_in(project, src, "train")
    if len(samples) > n_images:
        keep = np.random.default_rng(seed).permutation(len(samples))[:n_images]
        samples = [samples[i] for i in sorted(keep)]
    scale = source_scale(project, src, meta)
    diffs_lut, diffs_teacher, ssims = [], [], []
    for sample in samples:
        x = to_batch([rescale(read_sample(sample), scale)])
        by_lut = student(x)
        by_network = student.run_network(x)
        by_teacher = translate_batch(teacher, x)
        diffs_lut.append((by_lut - by_network).abs().amax().item() * 255)
        diffs_teacher.append((by_network - by_teacher).abs().mean().item() * 255)
        if min(x.shape[-2:]) >= 11:
            ssims.append(ssim_gray(by_lut, by_teacher).item())
    return {"n_images": len(samples), "lut_vs_network_max": round(max(diffs_lut), 3),
            "lut_vs_network_mean_of_max": round(float(np.mean(diffs_lut)), 3),
            "student_vs_teacher_mae": round(float(np.mean(diffs_teacher)), 3),
            "ssim_to_teacher": round(float(np.mean(ssims)), 4) if ssims else float("nan")}


def describe(request: DistillRequest, result: DistillResult) -> str:
    c = result.checks
    return (f"distilled {result.teacher['method']} epoch {result.teacher['epoch']} ({result.teacher['run']}) into "
            f"{result.run_dir}\n"
            f"on {c['n_images']} validation images: student vs teacher {c['student_vs_teacher_mae']:.2f} levels "
            f"(mean |diff|, 0-255), grayscale SSIM {c['ssim_to_teacher']:.3f}; colour table vs network at most "
            f"{c['lut_vs_network_max']:.2f} levels\n"
            f"next: stainshift harmonize --src {request.src} --dst {request.dst} --method distilled")

