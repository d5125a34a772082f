"""The training loop for every learned model in the registry (:mod:`stainshift.models.registry`).

A run lives in ``runs/<src>_to_<dst>/<method>/<run_id>/`` (:mod:`stainshift.runs`):

- ``config.json``: every option, the preset, code version, the split files' hashes, the scale factors and, with
  ``init_from``, the checkpoint the weights started from (and its hash);
- ``last.pt``: the full training state (networks, optimizers, schedulers, image pools, RNG states, epoch, manifest),
  written atomically at the end of every epoch, so an interrupted run (Ctrl-C, crash, power loss) resumes exactly
  from its last complete epoch with ``--resume``;
- ``epochs/epoch_NNN.pt``: the translating generator only (with its model name, options and the preprocessing
  it was trained with: scale factors and crop size of both domains), for the kept epochs;
- ``samples/epoch_NNN.png``: the same fixed source validation images, translated after every epoch;
- ``manifest.json``: epoch -> mean losses, seconds, kept file.

The model's ``data_regime`` says what a batch holds; :mod:`stainshift.train.batches` builds the epoch from it.
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
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stainshift import runs
from stainshift.atomic import atomic_write_text
from stainshift.data.datasets import (
    center_crop,
    center_crop_tensor,
    load_cell,
    mask_tensor,
    rescale_mask,
    to_tensor,
    to_uint8,
)
from stainshift.data.domains import crop_box
from stainshift.data.io import read_mask, write_image
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.device import resolve_device
from stainshift.errors import StainshiftError
from stainshift.grids import image_grid
from stainshift.models.kinds import Modality
from stainshift.models.registry import build_model, entry, model_class, options_from_dict
from stainshift.project import Project
from stainshift.provenance import code_version
from stainshift.tracking import RunTracker
from stainshift.train import checkpoints
from stainshift.train.batches import epoch_dataset, fixed_samples, training_samples
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
    init_from: Path | None = None  # a run folder, its last.pt or an epoch file: start from those weights
    classes: tuple[str, str] | None = None  # (from, to) classes of ``src`` (== ``dst``) for between-class models

    @property
    def pair(self) -> tuple[str, str]:
        """The names the run's folder and mlflow experiment go by: the domains, or ``domain.class`` views."""
        if self.classes is None:
            return self.src, self.dst
        return runs.class_view(self.src, self.classes[0]), runs.class_view(self.dst, self.classes[1])


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    manifest: list[dict[str, Any]]


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
        if "load_size" in request.overrides and project.cell_diameter:
            warnings.warn(f"{project.file}: load_size has no effect in a project with a cell_diameter (scale "
                          "harmonization sets the training scale); to train at another scale, use a project file "
                          "with another [project] cell_diameter", stacklevel=2)
        self.entry = entry(request.method)
        self.regime = model_class(request.method).data_regime
        self.data = training_samples(project, self.regime, request.src, request.dst, request.classes)
        self.sample_images = self._pick_sample_images(request.n_samples)
        self.scales = {request.src: scale_factor(project, request.src), request.dst: scale_factor(project, request.dst)}
        self._restart_options: dict[str, Any] | None = None
        self.run_dir, saved = self._run_dir_and_state()
        torch.manual_seed(request.seed)  # before building: initial weights depend only on the seed
        np.random.seed(request.seed)
        random.seed(request.seed)
        self.model = build_model(request.method, request.preset, **self._overrides(saved))
        self.options = self.model.options
        self.init = self._init_weights() if saved is None or self.request.init_from else None
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
        base = runs.method_dir(self.project, *r.pair, r.method)
        if r.resume:
            run = base / r.run_id if r.run_id else runs.latest_started_run(self.project, *r.pair, r.method)
            if run is None or not (runs.config_file(run).exists() or runs.last_state(run).exists()):
                raise StainshiftError(f"no {r.method} run of {r.src} -> {r.dst} to resume under {base}; "
                                      f"start one with `{runs.command_hint('train', r.method, *r.pair)}`")
            if not runs.last_state(run).exists():  # stopped before its first complete epoch: nothing to resume
                warnings.warn(f"{run.name} stopped before finishing its first epoch; starting it over", stacklevel=3)
                self._restart_options = runs.read_config(run).get("options")
                return run, None
            fix = "delete the run folder and train again without --resume"
            return run, checkpoints.load(runs.last_state(run), "training state", fix)
        run = base / (r.run_id or runs.new_run_id(r.preset, r.seed))
        if runs.last_state(run).exists():
            raise StainshiftError(f"{run}: a run with this id exists; pass --resume to continue it or another --run-id")
        return run, None

    def _file_paths(self, options: dict[str, Any], portable: bool) -> dict[str, Any]:
        """The model's file options made project-relative (``portable``, for the run's records, so a moved project
        still resumes) or absolute again (relative ones are read against the project folder)."""
        root = self.project.root.resolve()
        out = dict(options)
        for key in model_class(self.request.method).file_options:
            if not out.get(key):
                continue
            path = Path(out[key])
            if portable:
                out[key] = path.relative_to(root).as_posix() if path.is_absolute() and path.is_relative_to(root) \
                    else str(path)
            else:
                out[key] = str(path if path.is_absolute() else root / path)
        return out

    def _asked(self) -> dict[str, Any]:
        """The request's overrides; file options given as relative paths are read against the working folder."""
        asked = dict(self.request.overrides)
        for key in model_class(self.request.method).file_options:
            if asked.get(key):
                asked[key] = str(Path(asked[key]).resolve())
        return asked

    def _overrides(self, saved: dict[str, Any] | None) -> dict[str, Any]:
        if saved is None:  # a fresh run, or one started over: its recorded options, then what was asked now
            base = {k: tuple(v) if isinstance(v, list) else v
                    for k, v in self._file_paths(self._restart_options or {}, portable=False).items()}
            return {**base, **self._asked()}
        options = self._file_paths(saved["config"]["options"], portable=False)
        asked = self._asked()
        options.update({k: v for k, v in asked.items() if k in _RESUMABLE})
        changed = {k for k, v in asked.items() if k not in _RESUMABLE and options.get(k) != v}
        if changed:
            raise StainshiftError(f"--resume cannot change {sorted(changed)} of a saved run; start a new run instead")
        return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}

    def _config(self, saved: dict[str, Any] | None) -> dict[str, Any]:
        r = self.request
        config = {
            "method": r.method, "preset": r.preset, "src": r.src, "dst": r.dst, "seed": r.seed,
            "balanced": r.balanced, "options": self._file_paths(dataclasses.asdict(self.options), portable=True),
            "splits": {d: _file_sha(runs.split_file(self.project, d)) for d in (r.src, r.dst)},
            "scale": self.scales, "n_train": self._n_train(),
            "sample_images": [s.key for s in self.sample_images], "run_id": self.run_dir.name,
        }
        if r.classes is not None:
            config["pair"] = list(r.pair)
        if self.data.classes:
            config["classes"] = list(self.data.classes)
        if self.init is not None:
            config["init_from"] = self.init
        if saved is not None:
            identity = {k: v for k, v in config.items() if k != "options"}
            before = {k: v for k, v in saved["config"].items() if k in identity}
            if before != identity:
                diff = sorted(k for k in identity if before.get(k) != identity[k])
                raise StainshiftError(f"{self.run_dir}: cannot resume, {diff} changed since the run started "
                                      "(splits or scale settings?); start a new run")
            config["mlflow_run_id"] = saved["config"].get("mlflow_run_id")
            config["created"] = saved["config"].get("created")
            if "init_from" in saved["config"]:
                config["init_from"] = saved["config"]["init_from"]
        else:
            config["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        config["code_version"] = code_version()
        config["device"] = str(self.device)
        config["world_size"] = self.dist.world
        return config

    def _n_train(self) -> dict[str, int]:
        r = self.request
        if self.data.src:
            return {r.pair[0]: len(self.data.src), r.pair[1]: len(self.data.dst)}
        return {r.dst: len(self.data.dst)}

    def _pick_sample_images(self, n: int) -> list:
        """The same few validation images every epoch: the source's (the target's, with masks, for mask models)."""
        r = self.request
        if self.entry.consumes is Modality.MASK:
            domain, train = (r.src, self.data.src) if self.data.regime.masks_from_source else (r.dst,
                                                                                                     self.data.dst)
            val = [s for s in samples_in(self.project, domain, "val") if s.mask is not None] or train
        else:
            val = samples_in(self.project, r.src, "val") or self.data.src or self.data.dst
            if r.classes is not None:
                val = [s for s in val if s.label == r.classes[0]] or self.data.src
        return fixed_samples(val, n)

    def _init_weights(self) -> dict[str, Any] | None:
        """Load ``init_from`` into the freshly built model; what was loaded, for config.json."""
        source = self.request.init_from
        if source is None:
            return None
        if self.request.resume:
            raise StainshiftError("--init-from starts a new run; --resume continues one from its own last.pt: "
                                  "pass one or the other")
        path = Path(source)
        if path.is_dir():
            path = runs.last_state(path)
        ckpt = checkpoints.load(path, "checkpoint to start from", "pass a run folder, its last.pt or an epoch file",
                                weights_only=path.name != runs.LAST_STATE)
        state = ckpt["model"] if "model" in ckpt and isinstance(ckpt["model"], dict) else ckpt
        if state.get("model") != self.request.method:
            raise StainshiftError(f"{path} holds a {state.get('model')!r} model, not {self.request.method!r}; "
                                  f"--init-from takes a {self.request.method} run or epoch file")
        loaded = self.model.load_initial(state)
        return {"path": str(path.resolve()), "hash": checkpoints.file_hash(path), "loaded": loaded,
                "model": state.get("model")}

    def preprocessing(self) -> dict[str, dict[str, Any]]:
        """How training saw each domain: what ``harmonize`` must repeat for the translator to see the same."""
        r = self.request
        load_size = None if self.project.cell_diameter else self.options.load_size
        return {side: {"domain": name, "scale": self.scales[name], "crop_size": self.options.crop_size,
                       "load_size": load_size, "cell_diameter": self.project.cell_diameter}
                for side, name in (("src", r.src), ("dst", r.dst))}

    def _restore(self, saved: dict[str, Any]) -> None:
        # a run saved before an option existed has no key for it: it was trained with that option's default
        defaults = dataclasses.asdict(options_from_dict(self.request.method, saved["config"]["options"]))
        identity = {k: v for k, v in self._file_paths(defaults, portable=True).items() if k not in _RESUMABLE}
        now = {k: v for k, v in self._file_paths(dataclasses.asdict(self.options), portable=True).items()
               if k not in _RESUMABLE}
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
        # with a project cell diameter, scale harmonization sets the size; otherwise load_size does (reference way)
        load_size = None if self.project.cell_diameter else self.options.load_size
        data = epoch_dataset(self.data, r.seed, epoch, r.balanced, self.options.crop_size,
                             (self.scales[r.src], self.scales[r.dst]), load_size, self.dist.rank, self.dist.world)
        # an explicit generator keeps DataLoader from drawing on torch's global RNG (which the model's pool uses)
        return DataLoader(data, batch_size=self.options.batch_size, shuffle=False, num_workers=r.num_workers,
                          drop_last=len(data) >= self.options.batch_size, generator=torch.Generator().manual_seed(0),
                          persistent_workers=False)

    def _sample_grid(self, epoch: int) -> Path:
        translator = self.model.translator().eval()
        crop = max(self.options.crop_size, 64)
        if self.entry.consumes is Modality.MASK:
            r = self.request
            scale = self.scales[r.src if self.data.regime.masks_from_source else r.dst]
            x = torch.stack([center_crop_tensor(mask_tensor(rescale_mask(crop_box(read_mask(s.mask), s.box), scale)),
                                                crop)
                             for s in self.sample_images])
            shown = to_uint8((x / x.amax((1, 2, 3), keepdim=True).clamp_min(1)).expand(-1, 3, -1, -1))
            label = f"{r.src if self.data.regime.masks_from_source else r.dst} masks"
        else:
            shown = [center_crop(load_cell(s, self.scales[self.request.src]), crop) for s in self.sample_images]
            x = torch.stack([to_tensor(i) for i in shown])
            label = self.request.pair[0]
        with torch.inference_mode():
            y = to_uint8(translator(x.to(self.device)))
        grid = image_grid([shown, y], cell=crop, row_labels=[label, f"epoch {epoch}"])
        return write_image(runs.samples_file(self.run_dir, epoch), grid)

    def _save_epoch(self, epoch: int, losses: dict[str, float], seconds: float) -> dict[str, Any]:
        entry: dict[str, Any] = {"epoch": epoch, "losses": losses, "seconds": round(seconds, 2)}
        if epoch in self.options.keep_epochs or epoch == self.total_epochs:
            path = runs.epoch_file(self.run_dir, epoch)
            ckpt = {**self.model.translator().checkpoint(), "epoch": epoch, "run": self.config["run_id"],
                    "src": self.request.src, "dst": self.request.dst, "preprocessing": self.preprocessing()}
            if self.data.classes:
                ckpt["classes"] = list(self.data.classes)
            checkpoints.save(ckpt, path)
            entry["checkpoint"] = path.relative_to(self.run_dir).as_posix()
        entry["samples"] = self._sample_grid(epoch).relative_to(self.run_dir).as_posix()
        self.manifest.append(entry)
        state = {"format": checkpoints.FORMAT, "epoch": epoch, "config": self.config,
                 "model": self.model.training_state(), "rng": checkpoints.rng_state(), "manifest": self.manifest}
        checkpoints.save(state, runs.last_state(self.run_dir))
        atomic_write_text(runs.manifest_file(self.run_dir), json.dumps({"epochs": self.manifest}, indent=2))
        return entry

    def run(self) -> TrainResult:
        r = self.request
        main = self.dist.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(runs.config_file(self.run_dir), json.dumps(self.config, indent=2, default=str))
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
        self.run_dir = run_dir
        params = {f"opt.{k}": v for k, v in config["options"].items()}
        params.update({k: config[k] for k in ("method", "preset", "src", "dst", "seed", "balanced")})
        resume_id = config.get("mlflow_run_id")
        src, dst = config.get("pair") or (config["src"], config["dst"])
        self.tracker = RunTracker(project, f"{src}_to_{dst}",
                                  f"{config['method']}/{config['run_id']}", params,
                                  tags={"stainshift.method": config["method"], "stainshift.run_dir": str(run_dir)},
                                  run_id=resume_id)
        if not resume_id:
            config["mlflow_run_id"] = self.tracker.run_id
            atomic_write_text(runs.config_file(run_dir), json.dumps(config, indent=2, default=str))

    def log_epoch(self, entry: dict[str, Any]) -> None:
        epoch = entry["epoch"]
        self.tracker.log_metrics({f"loss_{k}": v for k, v in entry["losses"].items()}, step=epoch)
        self.tracker.log_metrics({"epoch_seconds": entry["seconds"]}, step=epoch)
        self.tracker.log_artifact(self.run_dir / entry["samples"], artifact_path="samples")
        if "checkpoint" in entry:
            self.tracker.log_artifact(self.run_dir / entry["checkpoint"], artifact_path="epochs")

    def close(self, status: str) -> None:
        self.tracker.close(status)


def train(project: Project, request: TrainRequest,
          on_iteration: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train (or resume) a translation model from ``request.src`` to ``request.dst``; returns the run folder."""
    return Trainer(project, request, on_iteration).run()
