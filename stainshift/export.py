"""``stainshift export``: a learned harmonizer (a kept epoch's translator) as an ONNX file, verified against torch.

The ONNX model takes what the :class:`~stainshift.models.base.Translator` takes: float32 RGB, NCHW, in [0, 1], at the
common scale the epoch was trained at (``preprocessing`` in the metadata gives the factor for source images), and
returns the translation, same shape, in [0, 1]. Batch, height and width are dynamic, down to ``min_side`` pixels.

The exporter is torch's ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript), the default and the
supported one since torch 2.9; the TorchScript exporter (``dynamo=False``) warns that it will be removed.
The translator's own padding does not export with dynamic shapes: ``-(-n // m)`` becomes ONNX's truncating ``Div``
(a 37-px side came out 36 px) and the reflect-or-replicate choice is frozen at the example's size, so
:class:`OnnxTranslator` exports the same padding written for symbolic sizes, and
reflection only (the translator itself replicates below ``min_side``). A distilled translator's colour table is
built before export and kept as a constant, so the graph is the table lookup (``GridSample``), not the network.

Before the file is written, onnxruntime runs it on source-domain images (when the project knows the source) and a
random batch of a size no training crop has, and its outputs are compared with torch's translator: above the
tolerance nothing is written and a one-line error says by how much they differ.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stainshift import runs
from stainshift.atomic import atomic_path
from stainshift.errors import StainshiftError
from stainshift.models.base import Translator, side_padding
from stainshift.models.kinds import Kind, Modality
from stainshift.models.registry import entry, load_epoch
from stainshift.project import Project
from stainshift.train import checkpoints

FORMATS = ("onnx",)
PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # onnxscript: torch's dynamo exporter translates with it
INSTALL = "pip install 'stainshift[export]'"
MIN_OPSET = 18               # the dynamo exporter's lowest; a lower request silently comes out as 18
TOLERANCE = 1e-4             # max |onnxruntime - torch| on float32 outputs in [0, 1]
MAX_SIDE = 256               # verification images are centre-cropped to this (quick on a CPU)
RANDOM_SHAPE = (2, 45, 51)   # batch, height, width of the random verification batch: odd, unlike any crop_size


@dataclass(frozen=True)
class ExportRequest:
    """A kept epoch of a run (``src``, ``dst``, ``method``, ``epoch``...) or an epoch file (``checkpoint``)."""

    src: str | None = None
    dst: str | None = None
    method: str = "cyclegan"
    epoch: str | int = "best"
    rule: str | None = None
    run_id: str | None = None
    checkpoint: Path | None = None
    out: Path | None = None      # default: <run>/export/epoch_NNN.onnx (runs.export_file)
    fmt: str = "onnx"
    opset: int | None = None     # None: the exporter's default
    tolerance: float = TOLERANCE
    images: int = 4              # source-domain images in the verification


@dataclass(frozen=True)
class ExportResult:
    out: Path
    checkpoint: Path
    model: str
    epoch: int | None
    checkpoint_hash: str
    opset: int
    min_side: int
    max_abs_diff: float
    inputs: str                  # what the verification ran on, in words
    tolerance: float


def missing_packages() -> list[str]:
    """The packages export needs that are not installed."""
    missing = []
    for name in PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: blocked in sys.modules
            found = False
        if not found:
            missing.append(name)
    return missing


def require_packages() -> None:
    if missing := missing_packages():
        raise StainshiftError(f"export needs {', '.join(missing)} (not installed): {INSTALL}")


def min_side(translator: Translator) -> int:
    """The smallest height and width the ONNX model takes: from there up the translator pads by reflection (its pads
    are shorter than the side), as the ONNX model does; below it the translator replicates, which the ONNX model
    does not (onnxruntime refuses the input)."""
    m, low = translator.multiple, translator.min_size
    if m == 1 and low == 1:
        return 1
    too_short = [n for n in range(1, low + m + 1) if max(side_padding(n, m, low)) >= n]  # from low on, pads < m <= n
    return too_short[-1] + 1 if too_short else 1


class OnnxTranslator(nn.Module):
    """``translator`` with :meth:`Translator.forward`'s padding written for symbolic sizes: positive floor division
    only, the pads always applied (zero where none is needed), reflection only."""

    def __init__(self, translator: Translator) -> None:
        super().__init__()
        self.translator = translator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.translator
        if t.multiple == 1 and t.min_size == 1:
            return t.translate_padded(x)
        h, w = x.shape[-2], x.shape[-1]
        (top, bottom), (left, right) = (side_padding(n, t.multiple, t.min_size) for n in (h, w))
        y = t.translate_padded(F.pad(x, (left, right, top, bottom), mode="reflect"))
        return y[..., top: top + h, left: left + w]


def _center_crop(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[top: top + side, left: left + side]


def verification_inputs(project: Project | None, src: str | None, meta: dict[str, Any], n_images: int,
                        smallest: int) -> tuple[list[torch.Tensor], str]:
    """Up to ``n_images`` of the source domain (spread over its classes, at the scale harmonize feeds the
    translator, centre-cropped to ``MAX_SIDE``) and a random batch; and what they are, in words."""
    from stainshift.data.datasets import rescale, to_batch
    from stainshift.data.domains import read_sample, scan_domain
    from stainshift.harmonize import source_scale

    batch, height, width = RANDOM_SHAPE
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(batch, 3, max(height, smallest + 1), max(width, smallest + 3), generator=generator)]
    if project is None or src is None or src not in project.domains or n_images < 1:
        return inputs, f"{batch} random inputs (no source domain in the project)"
    try:
        samples = scan_domain(project.domain(src))
        scale = source_scale(project, src, meta)
        images = [_center_crop(rescale(read_sample(s), scale), MAX_SIDE)
                  for s in samples[:: max(1, len(samples) // n_images)][:n_images]]
    except StainshiftError as exc:  # the data may be elsewhere than the model: the export does not need it
        return inputs, f"{batch} random inputs ({src} images unreadable: {exc})"
    images = [image for image in images if min(image.shape[:2]) >= smallest]
    return [to_batch([image]) for image in images] + inputs, f"{len(images)} {src} images and {batch} random inputs"


def _exported(model: OnnxTranslator, side: int, opset: int | None) -> Any:
    """torch.onnx.export (dynamo) of ``model`` (in eval mode) with dynamic batch, height and width (>= ``side``)."""
    from torch.export import Dim

    height = max(2 * side, 8) + 1
    example = torch.rand(2, 3, height, height + 2, generator=torch.Generator().manual_seed(0))
    dims = {"x": {0: Dim("batch", min=1), 2: Dim("height", min=side), 3: Dim("width", min=side)}}
    try:
        return torch.onnx.export(model, (example,), dynamo=True, verbose=False, opset_version=opset,
                                 input_names=["image"], output_names=["translated"], dynamic_shapes=dims)
    except Exception as exc:  # the exporter's failures vary (torch.export, onnxscript): one line, its first
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StainshiftError(f"the {model.translator.model_name} translator does not export to ONNX with torch "
                              f"{torch.__version__} ({type(exc).__name__}: {first[:200]})") from None


def _metadata(translator: Translator, meta: dict[str, Any], checkpoint: Path, digest: str, side: int
              ) -> dict[str, str]:
    from stainshift import __version__

    return {
        "stainshift_version": __version__, "model": translator.model_name, "epoch": str(meta.get("epoch", "")),
        "run": str(meta.get("run", "")), "src": str(meta.get("src", "")), "dst": str(meta.get("dst", "")),
        "checkpoint": digest, "checkpoint_file": checkpoint.name,
        "input": "float32 NCHW RGB in [0, 1]", "output": "float32 NCHW RGB in [0, 1], the input's shape",
        "input_range": "[0, 1]", "layout": "NCHW", "channels": "RGB", "min_side": str(side),
        "preprocessing": json.dumps(meta.get("preprocessing") or {}, sort_keys=True),
        "options": json.dumps(meta.get("options") or {}, sort_keys=True, default=str),
    }


def _compare(path: Path, translator: Translator, inputs: list[torch.Tensor]) -> float:
    """Max |onnxruntime - torch| over ``inputs``; a shape mismatch is an infinite difference."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    worst = 0.0
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        outputs = [session.run(None, {name: x.numpy()})[0] for x in inputs]
    except Exception as exc:  # onnxruntime's own errors (an operator it lacks, a shape it refuses): one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StainshiftError(f"onnxruntime {ort.__version__} cannot run the exported {translator.model_name} "
                              f"translator ({type(exc).__name__}: {first[:200]}); nothing written") from None
    for x, got in zip(inputs, outputs, strict=True):
        with torch.no_grad():
            expected = translator(x).numpy()
        if got.shape != expected.shape or not np.isfinite(got).all():
            return float("inf")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _checkpoint(project: Project | None, r: ExportRequest) -> tuple[Path, int | None]:
    if r.checkpoint is not None:
        return Path(r.checkpoint), None
    if project is None or not r.src or not r.dst:
        raise StainshiftError("export needs --src and --dst (a kept epoch of a run) or --checkpoint FILE")
    path, epoch, _ = runs.resolve_epoch(project, r.src, r.dst, r.method, r.epoch, r.run_id, r.rule)
    return path, epoch


def export(project: Project | None, request: ExportRequest) -> ExportResult:
    """Export the epoch to ONNX, verify it with onnxruntime against torch, then write it atomically."""
    r = request
    if r.fmt not in FORMATS:
        raise StainshiftError(f"--format {r.fmt}: use one of {', '.join(FORMATS)}")
    if not r.tolerance > 0:
        raise StainshiftError(f"--tolerance {r.tolerance}: use a positive number (default {TOLERANCE:g})")
    if r.images < 0:
        raise StainshiftError(f"--images {r.images}: use 0 (random inputs only) or more")
    require_packages()
    import onnx

    if r.opset is not None and not MIN_OPSET <= r.opset <= onnx.defs.onnx_opset_version():
        raise StainshiftError(f"--opset {r.opset}: torch's exporter writes opsets {MIN_OPSET} to "
                              f"{onnx.defs.onnx_opset_version()} (default: the exporter's)")
    path, epoch = _checkpoint(project, r)
    out = Path(r.out) if r.out else runs.checkpoint_export_file(path, r.fmt)
    if out.suffix != f".{r.fmt}":
        raise StainshiftError(f"--out {out}: name the file *.{r.fmt}")
    translator, meta = load_epoch(path)
    if out.resolve() == path.resolve():
        raise StainshiftError(f"--out {out} is the checkpoint itself; choose another file")
    found = entry(translator.model_name)
    if found.kind is not Kind.LEARNED or found.consumes is not Modality.RGB or found.produces is not Modality.RGB:
        raise StainshiftError(f"{path}: a {translator.model_name} translator turns {found.consumes.value} into "
                              f"{found.produces.value}; export takes RGB-to-RGB translators")
    if getattr(translator, "conditioned", False):
        raise StainshiftError(f"{path}: a conditioned student (condition image-stats) builds a colour table per "
                              "image, which the ONNX graph does not; export a plain student (condition none)")
    side = min_side(translator)
    inputs, described = verification_inputs(project, r.src or meta.get("src"), meta, r.images, side)
    model = OnnxTranslator(translator).eval()
    with torch.no_grad():  # after eval(), which drops a distilled translator's colour table: it is built now, so the
        translator(inputs[-1])  # export holds it as a constant instead of the network that computes it
    program = _exported(model, side, r.opset)
    opset = int(program.model.opset_imports.get("", 0))
    if r.opset is not None and opset != r.opset:
        raise StainshiftError(f"--opset {r.opset}: the exporter wrote opset {opset}; pass --opset {opset} or omit it")
    digest = checkpoints.file_hash(path)
    program.model.metadata_props.update(_metadata(translator, meta, path, digest, side))
    program.model.doc_string = (f"stainshift {translator.model_name} translator, epoch {meta.get('epoch')} of "
                                f"{meta.get('src')} -> {meta.get('dst')}: float32 NCHW RGB in [0, 1] in and out")
    with atomic_path(out) as tmp:
        program.save(tmp, external_data=False)
        diff = _compare(tmp, translator, inputs)
        if not diff <= r.tolerance:
            raise StainshiftError(f"{out}: onnxruntime differs from torch by {diff:.2e} (tolerance {r.tolerance:g}) "
                                  f"on {described}; nothing written")
    return ExportResult(out, path, translator.model_name, meta.get("epoch", epoch), digest, opset, side, diff,
                        described, r.tolerance)
