"""The training loop for translation models (CycleGAN, ColorizationGAN).

A run lives in ``runs/<src>_to_<dst>/<method>/<run_id>/``:

- ``config.json``: every option, the preset, code version, the split files' hashes and the scale factors;
- ``last.pt``: the full training state (networks, optimizers, schedulers, image pools, RNG states, epoch, manifest),
  written atomically at the end of every epoch, so an interrupted run (Ctrl-C, crash, power loss) resumes exactly
  from its last complete epoch with ``--resume``;
- ``epochs/epoch_NNN.pt``: the translating generator only (with its model name and options), for the kept epochs;
- ``samples/epoch_NNN.png``: the same fixed source validation images, translated after every epoch;
- ``manifest.json``: epoch -> mean losses, seconds, kept file.

Images are sized by scale harmonization when the project sets a common ``cell_diameter`` (each domain rescaled so
its cells span that many pixels), otherwise as in the reference code (shorter side resized to ``load_size``), then
randomly cropped to ``crop_size``, flipped and turned by multiples of 90 degrees.

Every random choice of an epoch (image order, target pairing, crops, flips) is drawn from a generator seeded by
(seed, epoch), and model randomness (image pool, dropout) from torch's global RNG, whose state is saved in
``last.pt``: so 2 epochs + resume + 2 epochs ends with the same weights as 4 epochs in one go.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stainshift import __version__
from stainshift.atomic import atomic_write_text
from stainshift.data.datasets import UnpairedCrops, center_crop, load_cell, to_tensor
from stainshift.data.domains import Sample
from stainshift.data.io import write_image
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in, split_file
from stainshift.errors import StainshiftError
from stainshift.grids import image_grid
from stainshift.models.registry import build_model
from stainshift.project import Project
from stainshift.train import checkpoints
from stainshift.train.distributed import Dist, all_reduce_grads, barrier, init_from_env, replicas_agree, shutdown

# Options that may change on --resume without invalidating the saved state.
_RESUMABLE = ("epochs", "keep_epochs")


@dataclass(frozen=True)
class TrainRequest:
    """What to train. ``overrides`` replace fields of the preset's model options (e.g. epochs, crop_size)."""

    src: str
    dst: str
    method: str = "cyclegan"
    preset: str = "cpu"
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    balanced: bool = False
    resume: bool = False
    run_id: str | None = None
    num_workers: int = 0
    device: str = "auto"
    amp: bool = True
    n_samples: int = 4
    progress: bool = True
    track: bool = True


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    manifest: list[dict[str, Any]]


def pair_dir(project: Project, src: str, dst: str, method: str) -> Path:
    return project.runs / f"{src}_to_{dst}" / method


def latest_run(project: Project, src: str, dst: str, method: str) -> Path | None:
    """The most recently updated run of this pair and method that has a ``last.pt``."""
    return _newest(pair_dir(project, src, dst, method).glob("*/last.pt"))


def _newest(checkpoints: Iterable[Path]) -> Path | None:
    """The run folder whose ``last.pt`` was written last."""
    runs = [p.parent for p in checkpoints]
    return max(runs, key=lambda p: (p / "last.pt").stat().st_mtime) if runs else None


def serving_run(project: Project, src: str, dst: str, method: str) -> Path | None:
    """The run that translates ``src`` to ``dst``: the pair's latest run; failing that, for a model that learns
    from the target domain alone (ColorizationGAN), the latest run of that method for any source with this target,
    since such a model never saw its source."""
    from stainshift.models.registry import MODELS

    run = latest_run(project, src, dst, method)
    if run is not None or method not in MODELS or not MODELS[method].target_only:
        return run
    return _newest(project.runs.glob(f"*_to_{dst}/{method}/*/last.pt"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def class_weights(samples: Sequence[Sample], balanced: bool) -> torch.Tensor:
    """Sampling weights: uniform, or 1/count(class) so each class is drawn equally often."""
    if not balanced:
        return torch.ones(len(samples), dtype=torch.float64)
    counts = Counter(s.label for s in samples)
    return torch.tensor([1.0 / counts[s.label] for s in samples], dtype=torch.float64)


def _draw(weights: torch.Tensor, n: int, gen: torch.Generator, permute: bool) -> torch.Tensor:
    """``n`` indices: a permutation when ``permute`` and the weights are uniform, else weighted draws."""
    if permute and bool((weights == weights[0]).all()):
        return torch.randperm(n, generator=gen)
    return torch.multinomial(weights, n, replacement=True, generator=gen)


def epoch_plan(src_weights: torch.Tensor, dst_weights: torch.Tensor, seed: int, epoch: int,
               over_target: bool = False) -> list[tuple[int, int, int]]:
    """The (source, target, augmentation seed) triples of one epoch.

    One item per source image (per target image for models that learn from the target alone); the other side is
    drawn at random. Class-balanced weights turn the permutation into weighted draws.
    """
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    n = len(dst_weights) if over_target else len(src_weights)
    src = _draw(src_weights, n, gen, permute=not over_target)
    dst = _draw(dst_weights, n, gen, permute=over_target)
    aug = torch.randint(0, 2**31 - 1, (n,), generator=gen)
    return list(zip(src.tolist(), dst.tolist(), aug.tolist(), strict=True))


def fixed_samples(samples: Sequence[Sample], n: int) -> list[Sample]:
    """``n`` images, one class after another, always the same ones for the same split."""
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    picked: list[Sample] = []
    while len(picked) < min(n, len(samples)):
        for group in by_class.values():
            if group and len(picked) < n:
                picked.append(group.pop(0))
    return picked


def _code_version() -> str:
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent)
        commit = done.stdout.strip() if done.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def _file_sha(path: Path) -> str | None:
    return checkpoints.file_hash(path) if path.exists() else None


class Trainer:
    """One training run; :func:`train` is the entry point."""

    def __init__(self, project: Project, request: TrainRequest,
                 on_iteration: Callable[[int, int], None] | None = None) -> None:
        self.project, self.request, self.on_iteration = project, request, on_iteration
        self.device = resolve_device(request.device)
        self.dist: Dist = init_from_env(self.device)
        project.domain(request.src), project.domain(request.dst)  # one-line errors for unknown domains first
        self.src_train = samples_in(project, request.src, "train")
        self.dst_train = samples_in(project, request.dst, "train")
        val = samples_in(project, request.src, "val") or self.src_train
        self.sample_images = fixed_samples(val, request.n_samples)
        self.scales = {request.src: scale_factor(project, request.src), request.dst: scale_factor(project, request.dst)}
        self.run_dir, saved = self._run_dir_and_state()
        torch.manual_seed(request.seed)  # before building: initial weights depend only on the seed
        np.random.seed(request.seed)
        random.seed(request.seed)
        self.model = build_model(request.method, request.preset, **self._overrides(saved))
        self.options = self.model.options
        self.config = self._config(saved)
        self.model.to(self.device)
        if self.dist.enabled:
            self.model.grad_sync = all_reduce_grads
        if request.amp and self.device.type == "cuda":
            self.model.amp_dtype = torch.bfloat16
        self.manifest: list[dict[str, Any]] = []
        self.start_epoch = 1
        if saved is not None:
            self._restore(saved)

    # -- setup ---------------------------------------------------------------------------------------------------
    def _run_dir_and_state(self) -> tuple[Path, dict[str, Any] | None]:
        r = self.request
        base = pair_dir(self.project, r.src, r.dst, r.method)
        if r.resume:
            run = base / r.run_id if r.run_id else latest_run(self.project, r.src, r.dst, r.method)
            if run is None:
                raise StainshiftError(f"no {r.method} run of {r.src} -> {r.dst} to resume under {base}; "
                                      f"start one with `stainshift train {r.method} --src {r.src} --dst {r.dst}`")
            fix = "delete the run folder and train again without --resume"
            return run, checkpoints.load(run / "last.pt", "training state", fix)
        run_id = r.run_id or f"{r.preset}-s{r.seed}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
        run = base / run_id
        if (run / "last.pt").exists():
            raise StainshiftError(f"{run}: a run with this id exists; pass --resume to continue it or another --run-id")
        return run, None

    def _overrides(self, saved: dict[str, Any] | None) -> dict[str, Any]:
        if saved is None:
            return dict(self.request.overrides)
        options = dict(saved["config"]["options"])
        options.update({k: v for k, v in self.request.overrides.items() if k in _RESUMABLE})
        changed = {k for k, v in self.request.overrides.items() if k not in _RESUMABLE and options.get(k) != v}
        if changed:
            raise StainshiftError(f"--resume cannot change {sorted(changed)} of a saved run; start a new run instead")
        return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}

    def _config(self, saved: dict[str, Any] | None) -> dict[str, Any]:
        r = self.request
        config = {
            "method": r.method, "preset": r.preset, "src": r.src, "dst": r.dst, "seed": r.seed,
            "balanced": r.balanced, "options": dataclasses.asdict(self.options),
            "splits": {d: _file_sha(split_file(self.project, d)) for d in (r.src, r.dst)},
            "scale": self.scales, "n_train": {r.src: len(self.src_train), r.dst: len(self.dst_train)},
            "sample_images": [s.key for s in self.sample_images], "run_id": self.run_dir.name,
        }
        if saved is not None:
            identity = {k: v for k, v in config.items() if k != "options"}
            before = {k: v for k, v in saved["config"].items() if k in identity}
            if before != identity:
                diff = sorted(k for k in identity if before.get(k) != identity[k])
                raise StainshiftError(f"{self.run_dir}: cannot resume, {diff} changed since the run started "
                                      "(splits or scale settings?); start a new run")
            config["mlflow_run_id"] = saved["config"].get("mlflow_run_id")
            config["created"] = saved["config"].get("created")
        else:
            config["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        config["code_version"] = _code_version()
        config["device"] = str(self.device)
        config["world_size"] = self.dist.world
        return config

    def _restore(self, saved: dict[str, Any]) -> None:
        identity = {k: v for k, v in saved["config"]["options"].items() if k not in _RESUMABLE}
        now = {k: v for k, v in dataclasses.asdict(self.options).items() if k not in _RESUMABLE}
        if checkpoints.config_hash(identity) != checkpoints.config_hash(now):
            raise StainshiftError(f"{self.run_dir}/last.pt: saved options differ from this model; start a new run")
        self.model.load_training_state(saved["model"])
        # --epochs may have grown: the saved optimizers carry the old schedule's current rate, recompute it
        for scheduler in self.model.schedulers.values():
            for group, base, rule in zip(scheduler.optimizer.param_groups, scheduler.base_lrs,
                                         scheduler.lr_lambdas, strict=True):
                group["lr"] = base * rule(scheduler.last_epoch)
        checkpoints.set_rng_state(saved["rng"])
        self.manifest = list(saved["manifest"])
        self.start_epoch = int(saved["epoch"]) + 1

    # -- the loop ------------------------------------------------------------------------------------------------
    @property
    def total_epochs(self) -> int:
        return int(self.options.epochs + self.options.epochs_decay)

    def _loader(self, epoch: int) -> DataLoader:
        r = self.request
        plan = epoch_plan(class_weights(self.src_train, r.balanced), class_weights(self.dst_train, r.balanced),
                          r.seed, epoch, over_target=self.model.target_only)
        plan = plan[self.dist.rank::self.dist.world]
        # with a project cell diameter, scale harmonization sets the size; otherwise load_size does (reference way)
        load_size = None if self.project.cell_diameter else self.options.load_size
        data = UnpairedCrops(self.src_train, self.dst_train, plan, self.options.crop_size,
                             self.scales[r.src], self.scales[r.dst], load_size)
        # an explicit generator keeps DataLoader from drawing on torch's global RNG (which the model's pool uses)
        return DataLoader(data, batch_size=self.options.batch_size, shuffle=False, num_workers=r.num_workers,
                          drop_last=len(data) >= self.options.batch_size, generator=torch.Generator().manual_seed(0),
                          persistent_workers=False)

    def _sample_grid(self, epoch: int) -> Path:
        translator = self.model.translator().eval()
        crop = max(self.options.crop_size, 64)
        inputs = [center_crop(load_cell(s.path, self.scales[self.request.src]), crop) for s in self.sample_images]
        with torch.inference_mode():
            x = torch.stack([to_tensor(i) for i in inputs]).to(self.device)
            y = translator(x).clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        grid = image_grid([inputs, list(y)], cell=crop, row_labels=[self.request.src, f"epoch {epoch}"])
        return write_image(self.run_dir / "samples" / f"epoch_{epoch:03d}.png", grid)

    def _save_epoch(self, epoch: int, losses: dict[str, float], seconds: float) -> dict[str, Any]:
        entry: dict[str, Any] = {"epoch": epoch, "losses": losses, "seconds": round(seconds, 2)}
        if epoch in self.options.keep_epochs or epoch == self.total_epochs:
            path = self.run_dir / "epochs" / f"epoch_{epoch:03d}.pt"
            ckpt = {**self.model.translator().checkpoint(), "epoch": epoch, "run": self.config["run_id"],
                    "src": self.request.src, "dst": self.request.dst}
            checkpoints.save(ckpt, path)
            entry["checkpoint"] = path.relative_to(self.run_dir).as_posix()
        entry["samples"] = self._sample_grid(epoch).relative_to(self.run_dir).as_posix()
        self.manifest.append(entry)
        state = {"format": checkpoints.FORMAT, "epoch": epoch, "config": self.config,
                 "model": self.model.training_state(), "rng": checkpoints.rng_state(), "manifest": self.manifest}
        checkpoints.save(state, self.run_dir / "last.pt")
        atomic_write_text(self.run_dir / "manifest.json", json.dumps({"epochs": self.manifest}, indent=2))
        return entry

    def run(self) -> TrainResult:
        r = self.request
        main = self.dist.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.json", json.dumps(self.config, indent=2, default=str))
        tracker = _Tracker(self.project, self.config, self.run_dir) if (main and r.track) else None
        status = "KILLED"
        try:
            for epoch in range(self.start_epoch, self.total_epochs + 1):
                start = time.perf_counter()
                sums: dict[str, float] = defaultdict(float)
                steps = 0
                loader = self._loader(epoch)
                bar = tqdm(loader, desc=f"{r.method} epoch {epoch}/{self.total_epochs}", unit="it",
                           disable=not (r.progress and main), leave=False)
                for steps, batch in enumerate(bar, start=1):
                    losses = self.model.train_step({k: v.to(self.device, non_blocking=True) for k, v in batch.items()})
                    for k, v in losses.items():
                        sums[k] += v
                    if self.on_iteration is not None:
                        self.on_iteration(epoch, steps)
                self.model.end_epoch()
                means = {k: v / max(steps, 1) for k, v in sums.items()}
                if main:
                    entry = self._save_epoch(epoch, means, time.perf_counter() - start)
                    if r.progress:
                        loss_text = " ".join(f"{k} {v:.3f}" for k, v in means.items())
                        kept = " (kept)" if "checkpoint" in entry else ""
                        tqdm.write(f"epoch {epoch}/{self.total_epochs}: {loss_text} [{entry['seconds']:.0f} s]{kept}")
                    if tracker:
                        tracker.log_epoch(entry)
                barrier(self.dist)
            if self.dist.enabled and not replicas_agree(self.model):
                raise StainshiftError("data-parallel processes ended with different weights; report this as a bug")
            status = "FINISHED"
        finally:
            if tracker:
                tracker.close(status)
            shutdown(self.dist)
        return TrainResult(self.run_dir, self.manifest[-1]["epoch"] if self.manifest else 0, self.manifest)


class _Tracker:
    """Mirrors a run into mlflow: params once, per-epoch losses (step=epoch), grids and kept checkpoints."""

    def __init__(self, project: Project, config: dict[str, Any], run_dir: Path) -> None:
        import mlflow

        from stainshift.tracking import experiment_id

        self.mlflow, self.run_dir = mlflow, run_dir
        mlflow.set_tracking_uri(project.tracking_uri)
        experiment = f"{config['src']}_to_{config['dst']}"
        resume_id = config.get("mlflow_run_id")
        if resume_id:
            self.run = mlflow.start_run(run_id=resume_id)
        else:
            self.run = mlflow.start_run(experiment_id=experiment_id(project, experiment),
                                        run_name=f"{config['method']}/{config['run_id']}",
                                        tags={"stainshift.method": config["method"],
                                              "stainshift.run_dir": str(run_dir)})
            params = {f"opt.{k}": v for k, v in config["options"].items()}
            params.update({k: config[k] for k in ("method", "preset", "src", "dst", "seed", "balanced")})
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            config["mlflow_run_id"] = self.run.info.run_id
            atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2, default=str))

    def log_epoch(self, entry: dict[str, Any]) -> None:
        epoch = entry["epoch"]
        self.mlflow.log_metrics({f"loss_{k}": v for k, v in entry["losses"].items()}, step=epoch)
        self.mlflow.log_metric("epoch_seconds", entry["seconds"], step=epoch)
        self.mlflow.log_artifact(str(self.run_dir / entry["samples"]), artifact_path="samples")
        if "checkpoint" in entry:
            self.mlflow.log_artifact(str(self.run_dir / entry["checkpoint"]), artifact_path="epochs")

    def close(self, status: str) -> None:
        self.mlflow.end_run(status=status)


def train(project: Project, request: TrainRequest,
          on_iteration: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train (or resume) a translation model from ``request.src`` to ``request.dst``; returns the run folder."""
    return Trainer(project, request, on_iteration).run()
