"""``harmonize``: translate a folder of images from one domain's staining to another's, with any method.

Every method of the registry that turns RGB images into RGB images (:mod:`stainshift.models.registry`) works here.
Classical methods (reinhard, macenko, histogram) are fitted on the target domain's train split; learned methods
(cyclegan, colorization, ...) load a kept epoch of a training run (``--epoch N``, ``last``, or ``best`` from the
run's ``selected.json``), and rescale the input as their epoch file says training did (a one-line warning when
the project file now says otherwise). Outputs mirror the input tree with the same file names, types and sizes, and
a ``manifest.csv`` (input, output, method, epoch, checkpoint hash). Inputs are never written to. A learned
method's epoch can also come from the mlflow model registry (``model="models:/NAME/VERSION"``,
:mod:`stainshift.model_registry`), and under ``torchrun`` the files are split across processes
(:mod:`stainshift.shard`).

Learned models run fully convolutionally at the input's size (after the same scale harmonization as in training).
An input that was shrunk to the common cell diameter comes back at its size with its own detail: the translation's
(blurred) change is upsampled and added to the original (``keep_detail``; :func:`carry_change`), instead of the
small output being enlarged, which would lose the resolution the common scale took away.
How much of an image a generator sees at once is ``context`` (:class:`Context`): ``image``, the whole image,
its instance-normalization layers using whole-image statistics (above ``tile`` px the image runs as overlapping
tiles blended with feathered weights, and :class:`_SharedInstanceNorm` measures those statistics layer by layer
over the tiles, so no seams appear); or ``crop``, tiles of the size the generator was trained on (its training
crop, from the epoch file), each normalized by its own statistics as its training crops were, overlapping by a
third and blended the same way; or ``cell``, for whole fields: the crop context, then each located white cell's
window of that size, centred on the cell, translated on its own and pasted over (feathered), so the part of the
field a classifier reads is translated as the generator's training crops were. ``crop`` and ``cell`` only change
images larger than the crop. :func:`default_context`: ``cell`` for a fields domain, ``image`` otherwise.
"""

from __future__ import annotations

import contextlib
import csv
import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from stainshift import runs
from stainshift.atomic import atomic_write_text
from stainshift.data.batching import stream_shape_batches
from stainshift.data.datasets import rescale, to_batch, to_uint8
from stainshift.data.domains import read_sample, scan_domain
from stainshift.data.io import list_images, read_image, write_image
from stainshift.data.scale import scale_factor
from stainshift.data.splits import samples_in
from stainshift.device import resolve_device
from stainshift.errors import ImageReadError, StainshiftError
from stainshift.models.kinds import Kind
from stainshift.models.registry import entry, load_epoch, names
from stainshift.project import Project
from stainshift.rules import RULES
from stainshift.train import checkpoints


class Context(Enum):
    """How much of an image a learned (not pixel-wise) translator sees at once."""

    IMAGE = "image"  # the whole image (tiles above ``tile`` px share its normalization statistics)
    CROP = "crop"    # tiles of its training crop size, each normalized by its own statistics, as in training
    CELL = "cell"    # whole fields: CROP, then each located cell's crop-size window translated alone, pasted over


def default_context(project: Project, src: str) -> Context:
    """``cell`` for a whole-field domain, ``image`` otherwise. Chosen on bccd's fields' validation cells (2 epochs of
    the seed-0 CycleGAN; benchmarks/results/bccdf_diagnosis_val.md): against the raw windows the ``image`` context
    lost 0.38 accuracy, ``crop`` 0.14 and ``cell`` 0.04 (n.s.). Crop-domain images are about the training crop's
    size, where the contexts hardly differ, and their results were measured whole."""
    return Context.CELL if project.domain(src).fields else Context.IMAGE


@dataclass(frozen=True)
class HarmonizeRequest:
    src: str | None = None  # None only with ``model``, which names its pair
    dst: str | None = None
    method: str | None = None  # None = cyclegan, or the ``model``'s method
    epoch: str | int = "best"
    rule: str | None = None  # with epoch "best": None = the latest selection (selected.json), else that rule's
    input: Path | None = None
    out: Path | None = None
    run_id: str | None = None
    tile: int = 512
    overlap: int = 64
    batch_size: int = 8
    device: str = "auto"
    fit_images: int = 200
    skip_bad: bool = False
    keep_detail: bool = True  # learned methods: carry the translation's colour change onto the full-size input
    context: Context | None = None  # learned methods: what the generator sees at once (None: default_context)
    progress: bool = True
    model: str | None = None  # a registered harmonizer (models:/NAME/VERSION, /latest or @ALIAS) instead of a run's
    #                           epoch; src, dst and method default to its own and must match it when given
    shard: tuple[int, int] | None = None  # (rank, world): only the files i % world == rank of the sorted list, rows
    #                                       to a partial manifest that stainshift.shard merges


@dataclass
class HarmonizeResult:
    out_dir: Path
    n_images: int
    manifest: Path
    epoch: int | None
    checkpoint: str | None
    skipped: list[str]
    selection: dict | None = None  # for --epoch best: the selection record used (rule, classifier, reason)
    method: str = ""
    model: str | None = None  # the registered version used, pinned (models:/NAME/VERSION) when asked by alias
    context: Context | None = None  # what a learned generator saw at once (after any fallback); None: pixel-wise


# -- loading a method ---------------------------------------------------------------------------------------------
def methods() -> tuple[str, ...]:
    """Every registered method that translates RGB images (classical and learned)."""
    return names(images_only=True)


def source_scale(project: Project, src: str, meta: dict[str, Any]) -> float:
    """The factor to rescale ``src`` images by before a learned translator: the one its training used (recorded in
    the epoch file) when it was trained on ``src``, else (older files; target-only models serving another source)
    the project's. Warns in one line when the project file now says otherwise."""
    now = scale_factor(project, src)
    trained = (meta.get("preprocessing") or {}).get("src") or {}
    if trained.get("domain") != src or trained.get("scale") is None:
        return now
    if abs(float(trained["scale"]) - now) > 1e-3:
        warnings.warn(f"{meta.get('run', 'this run')} epoch {meta.get('epoch')} was trained with '{src}' scaled by "
                      f"{trained['scale']:.4g}, the project file now gives {now:.4g}; using the checkpoint's "
                      "(train again to use the new cell diameters)", stacklevel=3)
    return float(trained["scale"])


def fit_classical(project: Project, method: str, dst: str, n_images: int, seed: int = 0) -> nn.Module:
    """A classical normalizer fitted on (up to ``n_images`` of) the target domain's train split."""
    from stainshift.normalize import build

    if entry(method).kind is not Kind.CLASSICAL:
        raise StainshiftError(f"{method} is not a classical method (classical: {', '.join(names(Kind.CLASSICAL))})")
    samples = samples_in(project, dst, "train")
    if len(samples) > n_images:
        order = np.random.default_rng(seed).permutation(len(samples))[:n_images]
        samples = [samples[i] for i in sorted(order)]
    normalizer = build(method)
    normalizer.fit([read_sample(s) for s in samples])
    return normalizer.eval()


# -- running a model on one image ---------------------------------------------------------------------------------
class _StopForward(Exception):
    """Raised inside a forward pass once the layer being measured has seen its input."""


class _SharedInstanceNorm:
    """Makes every InstanceNorm2d of a model normalize with whole-image statistics while the image runs as tiles.

    Statistics are measured layer by layer: pass k runs every tile up to the k-th normalization layer (earlier
    layers already using whole-image statistics), accumulates that layer's per-channel sums over the part of each
    tile that the tile owns (overlaps split at their middle, so every pixel counts once), and stops the forward
    pass there. After the last pass, tiled output matches whole-image output up to border effects, which the
    overlap and the feathered blending remove.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
        self.stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._target: int | None = None
        self._sums: list[torch.Tensor] | None = None
        self._owned: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)

    def _forward(self, layer: nn.InstanceNorm2d, x: torch.Tensor) -> torch.Tensor:
        key = id(layer)
        if key in self.stats:
            mean, var = self.stats[key]
            mean, var = mean.view(1, -1, 1, 1).to(x.dtype), var.view(1, -1, 1, 1).to(x.dtype)
        else:
            if self._target is None or self._target == key:
                self._target = key
                y0, y1, x0, x1 = self._owned
                h, w = x.shape[2:]
                part = x[:, :, round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)].double()
                sums = [part.sum((0, 2, 3)), (part * part).sum((0, 2, 3)),
                        torch.tensor(float(part.shape[2] * part.shape[3]), dtype=torch.float64)]
                self._sums = sums if self._sums is None else [a + b for a, b in zip(self._sums, sums, strict=True)]
                raise _StopForward
            mean, var = x.mean((2, 3), keepdim=True), x.var((2, 3), keepdim=True, unbiased=False)
        y = (x - mean) / torch.sqrt(var.clamp_min(0) + layer.eps)
        if layer.affine:
            y = y * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
        return y

    @contextlib.contextmanager
    def _patched(self) -> Iterator[None]:
        for layer in self.layers:
            layer.forward = lambda x, layer=layer: self._forward(layer, x)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for layer in self.layers:
                del layer.forward  # back to the class's forward

    def measure(self, tiles: Sequence[tuple[torch.Tensor, tuple[float, float, float, float]]]) -> None:
        """Measure whole-image statistics of every layer from ``(tile, owned fraction y0, y1, x0, x1)`` pairs."""
        with self._patched():
            for _ in self.layers:
                self._target, self._sums = None, None
                for tile, owned in tiles:
                    self._owned = owned
                    with contextlib.suppress(_StopForward):
                        self.model(tile)
                if self._target is None or self._sums is None:
                    break
                total, total_sq, n = self._sums
                mean = total / n
                self.stats[self._target] = (mean.float(), (total_sq / n - mean**2).clamp_min(0).float())

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        with self._patched():
            yield


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    w = np.ones(length, np.float32)
    ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    if not at_start and overlap:
        w[:overlap] = ramp
    if not at_end and overlap:
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def _owned(starts: list[int], i: int, tile: int, size: int) -> tuple[float, float]:
    """The fraction [a, b) of tile ``i`` that it owns: overlaps with its neighbours are split at their middle."""
    start, end = starts[i], min(starts[i] + tile, size)
    lo = start if i == 0 else (start + min(starts[i - 1] + tile, size)) // 2
    hi = end if i == len(starts) - 1 else (starts[i + 1] + end) // 2
    return (lo - start) / (end - start), (hi - start) / (end - start)


# Measured on 2 CPU cores (benchmarks/results/harmonize_speed.md): generator activations for more than ~64k pixels
# per call fall out of cache, and batch 8 at 256^2 ran 0.7x slower per image than batch 1. So batches are split into
# chunks of at most this many pixels: 4 images at 128^2, 1 at 256^2.
MAX_PIXELS_PER_CALL = 65536


@torch.inference_mode()
def translate_batch(model: nn.Module, images: torch.Tensor, max_pixels: int = MAX_PIXELS_PER_CALL) -> torch.Tensor:
    """Run ``model`` over a BCHW [0,1] batch in cache-friendly chunks; output clamped to [0, 1]."""
    step = max(1, max_pixels // (images.shape[2] * images.shape[3]))
    return torch.cat([model(images[i:i + step]).clamp_(0, 1) for i in range(0, len(images), step)])


@torch.inference_mode()
def translate_tiled(model: nn.Module, image: torch.Tensor, tile: int, overlap: int, shared_norm: bool = True
                    ) -> torch.Tensor:
    """Translate one CHW [0,1] image as overlapping ``tile`` x ``tile`` tiles with feathered blending; with
    ``shared_norm`` the tiles' instance normalization uses the whole image's statistics, else each tile's own."""
    _, h, w = image.shape
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    windows = [(iy, ix) for iy in range(len(ys)) for ix in range(len(xs))]

    def crop(iy: int, ix: int) -> torch.Tensor:
        return image[None, :, ys[iy]:ys[iy] + tile, xs[ix]:xs[ix] + tile]

    shared = _SharedInstanceNorm(model) if shared_norm else None
    if shared is not None and not shared.layers:
        shared = None
    if shared is not None:
        shared.measure([(crop(iy, ix), (*_owned(ys, iy, tile, h), *_owned(xs, ix, tile, w))) for iy, ix in windows])
    out = torch.zeros_like(image)
    weight = torch.zeros((1, h, w), dtype=image.dtype, device=image.device)
    with shared.applied() if shared is not None else contextlib.nullcontext():
        for iy, ix in windows:
            y, x = ys[iy], xs[ix]
            piece = model(crop(iy, ix))[0].clamp(0, 1)
            th, tw = piece.shape[1:]
            wy = _ramp(th, min(overlap, th // 2), iy == 0, y + th >= h)
            wx = _ramp(tw, min(overlap, tw // 2), ix == 0, x + tw >= w)
            mask = torch.from_numpy(np.outer(wy, wx)).to(image)[None]
            out[:, y:y + th, x:x + tw] += piece * mask
            weight[:, y:y + th, x:x + tw] += mask
    return out / weight.clamp_min(1e-8)


@torch.inference_mode()
def translate_one(model: nn.Module, image: np.ndarray, scale: float, tile: int = 512, overlap: int = 64,
                  crop: int | None = None, centres: Sequence[tuple[float, float]] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (RGB uint8) at the common scale and its translation there, as :func:`harmonize` makes them (one
    image at a time, for measurements; :func:`back_to_size` brings it to full size). ``centres``: its cells'
    (x, y) in full-size pixels, for the cell context."""
    small = rescale(image, scale)
    at_scale = None if centres is None else [[(x * scale, y * scale) for x, y in centres]]
    return small, to_uint8(translate_images(model, to_batch([small]), tile, overlap, crop, at_scale))[0]


def context_crop(context: Context, translator: nn.Module, meta: dict[str, Any]) -> int | None:
    """The tile size :func:`translate_images` takes for ``context``: the training crop of the epoch file (``crop``
    and ``cell`` contexts; None when the file does not record one, or for a pixel-wise translator, which has no
    context)."""
    if context not in (Context.CROP, Context.CELL) or getattr(translator, "pixelwise", False):
        return None
    seen = (meta.get("preprocessing") or {}).get("src") or {}
    size = seen.get("crop_size") or (meta.get("options") or {}).get("crop_size")
    return int(size) if size else None


def translate_images(model: nn.Module, batch: torch.Tensor, tile: int, overlap: int, crop: int | None = None,
                     centres: Sequence[Sequence[tuple[float, float]]] | None = None) -> torch.Tensor:
    """Translate a BCHW [0,1] batch of same-size images: as a batch, or image by image in tiles above ``tile`` px
    sharing the image's normalization statistics; with ``crop`` (the ``crop`` context), images larger than it run
    as ``crop`` px tiles, a third overlapping, each normalized by its own statistics; ``centres`` (the ``cell``
    context: per image, the cells' (x, y) in its pixels) then get their own crop-size window pasted over."""
    if crop is not None and max(batch.shape[2:]) > crop:
        out = torch.stack([translate_tiled(model, image, crop, crop // 3, shared_norm=False) for image in batch])
        for i, image_centres in enumerate(centres or []):
            for centre in image_centres:
                paste_cell(model, batch[i], out[i], centre, crop)
        return out
    if max(batch.shape[2:]) > tile:
        if getattr(model, "image_statistics", False):  # its map depends on the whole image: never tiled
            return torch.cat([translate_batch(model, image[None]) for image in batch])
        return torch.stack([translate_tiled(model, image, tile, overlap) for image in batch])
    return translate_batch(model, batch)


def cell_centres(project: Project, src: str, keys: Sequence[str], scale: float) -> list[list[tuple[float, float]]]:
    """Per image key of a fields domain, its located white cells' centres (x, y) after rescaling by ``scale``,
    smallest first, so that pasting in this order leaves the labelled (largest) cell's window on top."""
    from stainshift.data.fields import field_cells

    cells = field_cells(project, src)  # the whole domain: a subset would drop the others from the cache
    return [[(c.centre[0] * scale, c.centre[1] * scale) for c in reversed(cells[k].cells)] if k in cells else []
            for k in keys]


@torch.inference_mode()
def paste_cell(model: nn.Module, image: torch.Tensor, out: torch.Tensor, centre: tuple[float, float], crop: int
               ) -> None:
    """Translate the ``crop`` px window of CHW ``image`` centred on ``centre`` (x, y; moved inside the image) on
    its own and blend it into ``out`` in place, feathered over its outer eighth (not at the image's edges)."""
    _, h, w = image.shape
    if h < crop or w < crop:
        return
    x0 = min(max(round(centre[0] - crop / 2), 0), w - crop)
    y0 = min(max(round(centre[1] - crop / 2), 0), h - crop)
    piece = model(image[None, :, y0:y0 + crop, x0:x0 + crop])[0].clamp(0, 1)
    feather = max(1, crop // 8)
    wy = _ramp(crop, feather, y0 == 0, y0 + crop >= h)
    wx = _ramp(crop, feather, x0 == 0, x0 + crop >= w)
    mask = torch.from_numpy(np.outer(wy, wx)).to(out)[None]
    region = out[:, y0:y0 + crop, x0:x0 + crop]
    region.mul_(1 - mask).add_(piece * mask)


# Sigma (px at the common scale) of the blur on the translation's change before it is carried to full size: it keeps
# the colour change and drops the generator's 2-px (stride-2 upsampling) patterns; see
# benchmarks/results/harmonize_detail.md.
CHANGE_BLUR = 1.0


def carry_change(original: np.ndarray, small_input: np.ndarray, small_output: np.ndarray,
                 blur: float = CHANGE_BLUR) -> np.ndarray:
    """The full-size ``original`` plus the translation's change (``small_output - small_input``, blurred by
    ``blur`` px and upsampled): the target's colours with the input's own detail, where resizing the small output
    back would lose the resolution the common scale took away."""
    change = small_output.astype(np.float32) - small_input.astype(np.float32)
    if blur > 0:
        change = cv2.GaussianBlur(change, (0, 0), blur)
    h, w = original.shape[:2]
    up = cv2.resize(change, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(original.astype(np.float32) + up, 0, 255).round().astype(np.uint8)


def back_to_size(original: np.ndarray, small_input: np.ndarray, small_output: np.ndarray, keep_detail: bool
                 ) -> np.ndarray:
    """A translation made at the common scale, at the input's size again (see :func:`carry_change`)."""
    if small_output.shape[:2] == original.shape[:2]:
        return small_output
    shrink = small_output.shape[0] > original.shape[0]
    if keep_detail and not shrink:
        return carry_change(original, small_input, small_output)
    return cv2.resize(small_output, (original.shape[1], original.shape[0]),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


# -- the whole folder ---------------------------------------------------------------------------------------------
def _inputs(project: Project, request: HarmonizeRequest) -> tuple[Path, list[Path]]:
    if request.input is not None:
        root = Path(request.input).resolve()
        if not root.is_dir():
            raise StainshiftError(f"{request.input}: --input folder not found; pass a folder of images")
        files = list_images(root)
    else:
        root = project.domain(request.src).folder
        files = [s.path for s in scan_domain(project.domain(request.src))]
    if not files:
        raise StainshiftError(f"{root}: no images to harmonize (.jpg .png .bmp .tif); check --input")
    return root, files


def harmonize(project: Project, request: HarmonizeRequest) -> HarmonizeResult:
    """Translate the source domain's images (or ``request.input``) to the target's staining."""
    r = request
    if r.tile < 32:
        raise StainshiftError(f"--tile {r.tile}: tiles must be at least 32 px (default 512)")
    if not 0 <= r.overlap <= r.tile // 2:
        raise StainshiftError(f"--overlap {r.overlap}: use 0 to half the tile size ({r.tile // 2}); default 64")
    if r.batch_size < 1:
        raise StainshiftError(f"--batch-size {r.batch_size}: use 1 or more")
    if r.rule is not None and r.rule not in RULES:
        raise StainshiftError(f"unknown rule '{r.rule}'; use one of {', '.join(RULES)}")
    if r.shard is not None and not 0 <= r.shard[0] < r.shard[1]:
        raise StainshiftError(f"shard {r.shard}: use (rank, world) with 0 <= rank < world")
    registered = None
    if r.model is not None:
        from stainshift.model_registry import resolve

        if r.run_id is not None or r.rule is not None:
            raise StainshiftError("--model names one epoch of one run: drop --run-id and --rule")
        registered = resolve(project, r.model)
        r = replace(r, src=r.src or registered.src, dst=r.dst or registered.dst,
                    method=r.method or registered.method, model=registered.uri)
        registered.check_request(r.src, r.dst, r.method, r.epoch)
    elif not r.src or not r.dst:
        raise StainshiftError("harmonize needs --src and --dst (or --model models:/NAME/VERSION)")
    elif r.method is None:
        r = replace(r, method="cyclegan")
    if r.context is None:
        r = replace(r, context=default_context(project, r.src))
    method = entry(r.method)
    if method.between_classes:
        raise StainshiftError(f"{r.method} turns one class of a domain into another, not a stain into another: use "
                              "`stainshift rare generate`")
    if not method.translates_images:
        raise StainshiftError(f"{r.method} turns {method.consumes.value} into {method.produces.value}, not images into "
                              f"images; harmonize takes one of {', '.join(methods())}")
    project.domain(r.src), project.domain(r.dst)
    root, files = _inputs(project, r)
    if r.shard is not None:
        from stainshift.shard import take

        files = take(files, *r.shard)
    out_dir = Path(r.out).resolve() if r.out else runs.harmonized_dir(project, r.src, r.dst, r.method)
    if out_dir == root or out_dir.is_relative_to(root):
        raise StainshiftError(f"{out_dir}: output folder lies inside the input folder {root}; choose another --out")
    device = resolve_device(r.device)
    epoch: int | None = None
    ckpt_hash: str | None = None
    selection: dict | None = None
    scale, crop, centres_of, used = 1.0, None, {}, None
    learned = method.kind is Kind.LEARNED
    if not learned:
        model: nn.Module = fit_classical(project, r.method, r.dst, r.fit_images, project.seed).to(device)
    else:
        if registered is not None:
            from stainshift.model_registry import fetch

            path, epoch = fetch(project, registered), registered.epoch
        else:
            path, epoch, selection = runs.resolve_epoch(project, r.src, r.dst, r.method, r.epoch, r.run_id, r.rule)
        translator, meta = load_epoch(path)
        model = translator.to(device)
        ckpt_hash = checkpoints.file_hash(path)
        # the GAN saw cells at the common diameter: show them that way; a pixel-wise model needs no rescaling
        scale = 1.0 if translator.pixelwise else source_scale(project, r.src, meta)
        crop = context_crop(r.context, translator, meta)
        used = None if translator.pixelwise else (r.context if crop is not None else Context.IMAGE)
        if r.context is not Context.IMAGE and used is Context.IMAGE:
            warnings.warn(f"{path.name} records no training crop size: translating in the image context, not "
                          f"{r.context.value}", stacklevel=2)
        if used is Context.CELL:
            if r.input is None and project.domain(r.src).fields:
                # per input file (its key: the path under the domain folder), its cells' centres in full-size
                # pixels; flush rescales them with the image
                keys = [f.relative_to(root).as_posix() for f in files]
                centres_of = dict(zip(files, cell_centres(project, r.src, keys, 1.0), strict=True))
            else:
                used = Context.CROP
                warnings.warn("the cell context needs the located cells of a fields domain (no --input); "
                              "translating in the crop context", stacklevel=2)
    skipped: list[str] = []
    rows: list[dict[str, object]] = []
    protect = {f.resolve() for f in files}

    @torch.inference_mode()
    def flush(items: Sequence[tuple[Path, np.ndarray]]) -> None:
        originals = [img for _, img in items]
        smalls = [rescale(img, scale) for img in originals]
        batch = to_batch(smalls).to(device)
        centres = [[(x * scale, y * scale) for x, y in centres_of.get(path, [])] for path, _ in items] \
            if centres_of else None
        done = translate_images(model, batch, r.tile, r.overlap, crop, centres) if learned \
            else model(batch).clamp(0, 1)
        outs = to_uint8(done)
        for (src_path, original), small, out in zip(items, smalls, outs, strict=True):
            out = back_to_size(original, small, out, r.keep_detail)  # after scale harmonization
            target = out_dir / src_path.relative_to(root)
            write_image(target, out, protect=protect)
            rows.append({"input": str(src_path), "output": str(target), "method": r.method,
                         "epoch": "" if epoch is None else epoch, "checkpoint": ckpt_hash or "",
                         "context": "" if used is None else used.value})

    def readable() -> Iterator[tuple[Path, np.ndarray]]:
        for path in tqdm(files, desc=f"harmonize {r.method}", unit="img", disable=not r.progress):
            try:
                yield path, read_image(path)
            except ImageReadError as exc:
                if not r.skip_bad:
                    raise StainshiftError(f"{exc} (or pass --skip-bad to skip unreadable images)") from None
                skipped.append(str(exc))

    for batch in stream_shape_batches(readable(), lambda item: item[1].shape, r.batch_size):
        flush(batch)

    if r.shard is not None:
        from stainshift.shard import write_partial

        manifest = write_partial(out_dir, *r.shard, rows, skipped)
    else:
        manifest = write_manifest(out_dir, rows)
    return HarmonizeResult(out_dir, len(rows), manifest, epoch, ckpt_hash, skipped, selection, r.method, r.model,
                           used)


MANIFEST_FIELDS = ("input", "output", "method", "epoch", "checkpoint", "context")


def write_manifest(out_dir: Path, rows: Sequence[dict[str, object]]) -> Path:
    """``out_dir/manifest.csv``: one row per output, sorted by input path, written atomically."""
    manifest = out_dir / "manifest.csv"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(MANIFEST_FIELDS))
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda row: str(row["input"])))
    atomic_write_text(manifest, buffer.getvalue())
    return manifest
