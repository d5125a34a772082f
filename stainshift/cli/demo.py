"""``stainshift demo``: the synthetic two-hospital flow end to end, with local sqlite tracking."""

from __future__ import annotations

import argparse

EXAMPLE = """example:
  stainshift demo --quick                  # about a minute on 2 CPU cores
  stainshift demo --workdir /tmp/demo      # the full-size run (a few minutes)
then: cd stainshift-demo && stainshift domains list"""


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="run the synthetic two-hospital demo end to end",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller data and fewer epochs (under 2 minutes)")
    p.add_argument("--workdir", default="stainshift-demo", help="where data, project file and runs go")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stainshift.demo import run_demo

    summary = run_demo(args.workdir, quick=args.quick, progress=not args.quiet, seed=args.seed)
    print(summary.to_text())
    return 0
