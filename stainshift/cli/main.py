"""The ``stainshift`` command: argument parsing and error reporting only; the work is in the Python API."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from stainshift.cli import (
    benchmark,
    classify,
    demo,
    distill,
    domains,
    export,
    harmonize,
    models,
    pipeline,
    rare,
    report,
    select,
    simulate,
    synth,
    train,
)
from stainshift.errors import StainshiftError

COMMAND_GROUPS = (demo, simulate, domains, train, select, harmonize, models, classify, benchmark, report, synth,
                  rare, distill, export, pipeline)


def common_options() -> argparse.ArgumentParser:
    """Options every command accepts (given after the command name)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--project", metavar="PATH", help="project file or its folder (default: ./stainshift.toml)")
    parent.add_argument("--quiet", "-q", action="store_true", help="no progress bars or chatter; errors still print")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stainshift",
        description="Standardize blood-cell microscopy staining across hospitals.",
        epilog="example: stainshift demo --quick    (then: stainshift COMMAND --help)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from stainshift import __version__

    parser.add_argument("--version", action="version", version=f"stainshift {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = common_options()
    for group in COMMAND_GROUPS:
        group.add_parser(sub, common)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def free_cores() -> int | None:
    """CPU threads worth using now: the cores minus those other processes keep busy (1-minute load), at least 1.

    None when the user chose (``OMP_NUM_THREADS``) or the platform cannot tell. Oversubscribed OpenMP threads spin
    while they wait for a core: on this 2-core machine, with another job running, a CycleGAN epoch took 5x longer
    on 2 threads than on 1.
    """
    if os.environ.get("OMP_NUM_THREADS") or not hasattr(os, "getloadavg"):
        return None
    cores = os.cpu_count() or 1
    return max(1, min(cores, cores - round(os.getloadavg()[0])))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.showwarning = _one_line_warning
    threads = free_cores()
    if threads is not None:  # before torch loads, so its OpenMP pool starts at that size (and commands without
        os.environ["OMP_NUM_THREADS"] = str(threads)  # torch do not pay for importing it)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    try:
        return int(args.func(args) or 0)
    except StainshiftError as exc:
        print(f"stainshift: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stainshift: interrupted", file=sys.stderr)
        return 130
