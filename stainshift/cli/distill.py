"""``stainshift distill``: learn a trained harmonizer's colour mapping with a pixel-wise student (1x1 convolutions,
then a 3-D colour table), which cannot draw or erase structure and runs far faster than its teacher."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  stainshift distill --src hgtp --dst clinic                        # the selected cyclegan epoch, cpu preset
  stainshift distill --src hgtp --dst clinic --teacher cyclegan --epoch 3 --epochs 20
  stainshift distill --src hgtp --dst clinic --resume               # continue the student's run exactly
  stainshift harmonize --src hgtp --dst clinic --method distilled   # then use it like any learned method
The student's run goes to runs/<src>_to_<dst>/distilled/<teacher>-e<N>-<preset>-s<seed>-<hash>/ with distill.json (the
teacher's file and hash; colour table vs network and student vs teacher on the source's validation images)."""


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from stainshift.cli.harmonize import _epoch
    from stainshift.cli.train import _option
    from stainshift.rules import RULES

    p = sub.add_parser("distill", parents=[common], help="a fast pixel-wise student of a trained harmonizer",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="source domain")
    p.add_argument("--dst", required=True, help="target domain")
    p.add_argument("--teacher", default="cyclegan", help="the learned method distilled (default cyclegan)")
    p.add_argument("--epoch", type=_epoch, default="best",
                   help="the teacher's epoch: best (its selection; default), last or N")
    p.add_argument("--rule", choices=RULES, help="with --epoch best: that rule's newest selection")
    p.add_argument("--teacher-run", help="the teacher's run id (default: the latest)")
    p.add_argument("--preset", default="cpu", help="student preset: cpu (default), paper (StainNet's), tiny")
    p.add_argument("--epochs", type=int, help="student epochs (preset default otherwise)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE", type=_option,
                   help="override a student option, e.g. --set lut_size=65 --set lr=0.01 (repeatable)")
    p.add_argument("--seed", type=int, help="the student's seed (default: its teacher run's)")
    p.add_argument("--resume", action="store_true", help="continue the student's run from its last.pt")
    p.add_argument("--check-images", type=int, default=32, help="source validation images for the checks")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-track", action="store_true", help="do not log to mlflow")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stainshift.distill import DistillRequest, describe, distill
    from stainshift.project import load_project

    overrides = dict(args.options)
    if args.epochs is not None:
        overrides.update(epochs=args.epochs, keep_epochs=(args.epochs,))
    request = DistillRequest(src=args.src, dst=args.dst, teacher=args.teacher, epoch=args.epoch, rule=args.rule,
                             teacher_run=args.teacher_run, preset=args.preset, seed=args.seed, overrides=overrides,
                             resume=args.resume, check_images=args.check_images, device=args.device,
                             progress=not args.quiet, track=not args.no_track)
    result = distill(load_project(args.project), request)
    if not args.quiet:
        print(describe(request, result))
    return 0
