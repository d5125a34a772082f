"""Where a result came from, read at the START of the work: command line, options, commit, whether the tree had
uncommitted changes, machine. Written into every results file and run config."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stainshift.errors import StainshiftError

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> str:
    """Short hash of the checked-out commit, or "uncommitted" outside a git checkout."""
    return _git("rev-parse", "--short", "HEAD") or "uncommitted"


def tree_dirty() -> bool | None:
    """Whether tracked files differ from the commit (None outside a git checkout)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def code_version() -> str:
    """``<version>+<commit>`` (``+dirty`` when the tree has uncommitted changes)."""
    from stainshift import __version__

    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return __version__
    return f"{__version__}+{commit}" + (".dirty" if tree_dirty() else "")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(**versions: str) -> dict[str, Any]:
    """CPU, cores, torch threads, load and library versions (``versions`` adds more)."""
    import numpy as np
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_1min": load,
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__, **versions}


def record(options: dict[str, Any] | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """The provenance of a measurement, to be taken before it starts."""
    return {"started": datetime.now(UTC).isoformat(timespec="seconds"), "commit": git_commit(),
            "dirty": tree_dirty(), "command": shlex.join(argv if argv is not None else sys.argv),
            "options": options or {}, "machine": machine()}


def require_clean(allow_dirty: bool, what: str) -> None:
    """Refuse to measure on a tree with uncommitted changes (the numbers would come from code nobody can check
    out), unless ``allow_dirty``."""
    if tree_dirty() and not allow_dirty:
        raise StainshiftError(f"{what}: the working tree has uncommitted changes; commit them first (results must "
                              "name the code they came from) or pass --allow-dirty")
