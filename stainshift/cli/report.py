"""``stainshift report --src S --dst D``: one static HTML page of the pair's benchmark (tables with CIs and paired
differences, accuracy-vs-epoch and selection curves, before/after image grids, confusion matrices, the selected
epochs and why, mlflow links, provenance), with its images in a folder next to it."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  stainshift report --src hgtp --dst clinic                  # -> runs/hgtp_to_clinic/report/index.html
  stainshift report --src hgtp --dst clinic --out share/hgtp --per-class 1
  stainshift report --src hgtp --dst clinic --no-confusions  # skip re-evaluating the classifiers
Needs `stainshift benchmark --src S --dst D` first. The page loads nothing from the network: copy the folder (index.html
and files/) anywhere and open index.html in a browser."""


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("report", parents=[common], help="a static HTML page of a pair's benchmark",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="the source domain the benchmark measured on")
    p.add_argument("--dst", required=True, help="the target domain the classifiers were trained on")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<src>_to_<dst>/report)")
    p.add_argument("--per-class", type=int, default=2, metavar="N", help="test cells per class in the image grid "
                   "(default 2)")
    p.add_argument("--no-confusions", dest="confusions", action="store_false",
                   help="leave out the confusion matrices (they re-evaluate the stored classifiers)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stainshift.project import load_project
    from stainshift.report import build_report

    page = build_report(load_project(args.project), args.src, args.dst, args.out, per_class=args.per_class,
                        confusions=args.confusions)
    if not args.quiet:
        print(f"wrote {page} (open it in a browser; it needs no network)")
    return 0
