"""The ``stainshift`` command: argument parsing and error reporting only; the work is in the Python API."""

from __future__ import annotations

import argparse
import sys
import warnings

from stainshift.cli import benchmark, classify, demo, domains, harmonize, select, simulate, train
from stainshift.errors import StainshiftError

COMMAND_GROUPS = (demo, simulate, domains, train, select, harmonize, classify, benchmark)


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.showwarning = _one_line_warning
    try:
        return int(args.func(args) or 0)
    except StainshiftError as exc:
        print(f"stainshift: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stainshift: interrupted", file=sys.stderr)
        return 130
