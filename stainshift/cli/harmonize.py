"""``stainshift harmonize``: translate a domain's (or a folder's) images to another domain's staining."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLE = """examples:
  stainshift harmonize --src hgtp --dst clinic --method reinhard
  stainshift harmonize --src hgtp --dst clinic --method cyclegan --epoch 3
  stainshift harmonize --src hgtp --dst clinic --method cyclegan --epoch best --input new_smears/ --out out/
  stainshift harmonize --model models:/stainshift-hgtp_to_clinic-cyclegan/1 --input new_smears/ --out out/
  torchrun --nproc_per_node 4 -m stainshift harmonize --src hgtp --dst clinic --method reinhard   # files split
Output (default runs/<src>_to_<dst>/<method>/harmonized/) mirrors the input tree, same names, types and sizes,
plus manifest.csv (input, output, method, epoch, checkpoint hash, context). Inputs are never overwritten.
--model takes a harmonizer registered with `stainshift models register` (pair, method and epoch from the registry).
Under torchrun each process translates every N-th file and rank 0 writes the one manifest."""


def _epoch(text: str) -> str | int:
    if text in ("best", "last"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use best, last or an epoch number") from None


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from stainshift.models.registry import names
    from stainshift.rules import RULES

    p = sub.add_parser("harmonize", parents=[common], help="translate images to another domain's staining",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", help="source domain (required unless --model gives it)")
    p.add_argument("--dst", help="target domain (required unless --model gives it)")
    p.add_argument("--method", choices=names(images_only=True), help="default cyclegan (or the --model's)")
    p.add_argument("--epoch", type=_epoch,
                   help="best (the epoch `stainshift select` chose; needs a selection), last, or N (default best)")
    p.add_argument("--model", metavar="URI", help="a registered harmonizer: models:/NAME/VERSION, models:/NAME/latest "
                   "or models:/NAME@ALIAS (see `stainshift models list`); --src/--dst/--method then come from it")
    p.add_argument("--rule", choices=RULES, help="with --epoch best: the newest selection by this rule (default: "
                   "the latest selection made, selected.json; after `stainshift benchmark` that is the labelled "
                   "rule's choice by the selection classifier)")
    p.add_argument("--run-id", help="which training run (default: the latest)")
    p.add_argument("--input", type=Path, help="folder of images (default: the source domain's folder)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<src>_to_<dst>/<method>/harmonized)")
    p.add_argument("--tile", type=int, default=512, help="images larger than this are translated in tiles")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (feathered)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images and list them")
    p.add_argument("--no-keep-detail", dest="keep_detail", action="store_false",
                   help="learned methods: enlarge the output made at the common scale instead of carrying its colour "
                        "change onto the full-size input (loses detail; the behaviour before keep-detail)")
    p.add_argument("--context", choices=("image", "crop", "cell"),
                   help="learned methods: what the generator sees at once: the whole image; tiles of its training "
                        "crop size, each normalized on its own as in training; or (whole fields) those tiles with "
                        "each located cell's own crop-size window pasted over (default: cell for a fields domain, "
                        "else image)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from stainshift.errors import StainshiftError
    from stainshift.harmonize import Context, HarmonizeRequest
    from stainshift.project import load_project
    from stainshift.shard import harmonize_distributed

    project = load_project(args.project)
    if args.model:
        from stainshift.train.distributed import from_env

        if from_env().enabled and not args.model.rstrip("/").split("/")[-1].isdigit():
            raise StainshiftError(f"--model {args.model}: under torchrun every process must load the same version; "
                                  "pin its number, e.g. models:/NAME/3 (see `stainshift models list`)")
    asked_epoch = "best" if args.epoch is None else args.epoch
    # with --model, what the version says (pair, method) need not be repeated; harmonize checks what was said
    request = HarmonizeRequest(src=args.src, dst=args.dst, method=args.method, epoch=asked_epoch, rule=args.rule,
                               input=args.input, out=args.out, run_id=args.run_id, tile=args.tile,
                               overlap=args.overlap, batch_size=args.batch_size, device=args.device,
                               skip_bad=args.skip_bad, keep_detail=args.keep_detail, progress=not args.quiet,
                               context=Context(args.context) if args.context else None,
                               model=args.model)
    result = harmonize_distributed(project, request)
    if result is None:  # another torchrun rank than 0: rank 0 reports for all
        return 0
    for reason in result.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    if not args.quiet:
        epoch = f" epoch {result.epoch}" if result.epoch is not None else ""
        if result.selection is not None:
            chosen = result.selection
            by = f", classifier {Path(chosen['classifier']).parent.name}" if chosen.get("classifier") else ""
            epoch += f" (best by the {chosen['rule']} rule{by})"
        if result.model is not None:
            epoch += f" ({result.model})"
        if result.context is not None:
            epoch += f", {result.context.value} context"
        print(f"harmonized {result.n_images} images with {result.method}{epoch} -> {result.out_dir} "
              f"(manifest: {result.manifest.name})")
    return 0
