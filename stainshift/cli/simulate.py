"""``stainshift simulate``: render single-cell images of K hospitals with ground truth."""

from __future__ import annotations

import argparse

EXAMPLE = """example:
  stainshift simulate --out sim --hospitals 2 --per-class 50 --size 96
  -> sim/clinic/<class>/<id>.png, sim/hgtp/..., sim/<hospital>/masks/<class>/<id>.png, sim/pairs.csv"""


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("simulate", parents=[common], help="render simulated cells under several hospital protocols",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--hospitals", default="2",
                   help="how many hospitals (clinic, hgtp, site3, ...) or a comma-separated list of names")
    p.add_argument("--per-class", type=int, default=50, help="cells per class (default 50)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stainshift.data.simulate import simulate

    hospitals = int(args.hospitals) if args.hospitals.isdigit() else [h.strip() for h in args.hospitals.split(",")]
    pairs = simulate(args.out, hospitals=hospitals, per_class=args.per_class, size=args.size, seed=args.seed,
                     progress=not args.quiet)
    if not args.quiet:
        names = sorted(pairs["hospital"].unique())
        print(f"wrote {len(pairs)} images ({pairs['id'].nunique()} cells x {len(names)} hospitals: "
              f"{', '.join(names)}) to {args.out}")
    return 0
