"""``stainshift export``: write a kept epoch of a learned harmonizer as an ONNX file (dynamic batch, height and
width), checked with onnxruntime against torch before it is written."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  stainshift export --src hgtp --dst clinic                                  # cyclegan, --epoch best
  stainshift export --src hgtp --dst clinic --method distilled --epoch last --out clinic_student.onnx
  stainshift export --checkpoint runs/hgtp_to_clinic/cyclegan/cpu-s0-20250101-120000/epochs/epoch_003.pt
Output (default <run>/export/epoch_NNN.onnx): float32 NCHW RGB in [0, 1] in and out, at the common scale the epoch
was trained at; metadata_props hold the model, epoch, src, dst, checkpoint hash and preprocessing. Before writing,
onnxruntime runs it on source images and a random batch: the largest difference from torch is printed, and above
--tolerance nothing is written. Needs onnx, onnxscript and onnxruntime: pip install 'stainshift[export]'."""


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from stainshift.cli.harmonize import _epoch
    from stainshift.models.kinds import Kind
    from stainshift.models.registry import entries
    from stainshift.rules import RULES

    p = sub.add_parser("export", parents=[common], help="write a learned harmonizer as an ONNX file, verified",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", help="source domain (with --dst: export a kept epoch of that pair's run)")
    p.add_argument("--dst", help="target domain")
    p.add_argument("--method", default="cyclegan",
                   choices=[e.name for e in entries(Kind.LEARNED, images_only=True)])
    p.add_argument("--epoch", type=_epoch, default="best", help="best (the selected epoch), last or N (default best)")
    p.add_argument("--rule", choices=RULES, help="with --epoch best: the newest selection by this rule")
    p.add_argument("--run-id", help="which training run (default: the latest)")
    p.add_argument("--checkpoint", type=Path, metavar="PATH", help="an epoch file to export instead of a run's epoch")
    p.add_argument("--format", dest="fmt", default="onnx", choices=("onnx",))  # = export.FORMATS (not imported: torch)
    p.add_argument("--out", type=Path, metavar="FILE", help="output file (default <run>/export/epoch_NNN.onnx)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--tolerance", type=float,
                   help="largest allowed |onnxruntime - torch| (default 1e-4, stainshift.export.TOLERANCE)")
    p.add_argument("--images", type=int, default=4, help="source-domain images in the verification (default 4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stainshift.errors import ProjectError
    from stainshift.export import TOLERANCE, ExportRequest, export
    from stainshift.project import load_project

    try:
        project = load_project(args.project)
    except ProjectError:
        if args.checkpoint is None or args.project is not None:
            raise
        project = None  # an epoch file alone: verified on random inputs
    request = ExportRequest(src=args.src, dst=args.dst, method=args.method, epoch=args.epoch, rule=args.rule,
                            run_id=args.run_id, checkpoint=args.checkpoint, out=args.out, fmt=args.fmt,
                            opset=args.opset, images=args.images,
                            tolerance=TOLERANCE if args.tolerance is None else args.tolerance)
    result = export(project, request)
    if not args.quiet:
        epoch = f" epoch {result.epoch}" if result.epoch is not None else ""
        print(f"exported {result.model}{epoch} (checkpoint {result.checkpoint_hash}) -> {result.out} (opset "
              f"{result.opset}; batch x 3 x height x width, sides >= {result.min_side} px)")
    print(f"verified with onnxruntime on {result.inputs}: max |onnx - torch| = {result.max_abs_diff:.2e} "
          f"(tolerance {result.tolerance:g})")
    return 0
