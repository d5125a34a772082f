"""Checkpoint files: full training state (``last.pt``) and generator-only epoch files, all written atomically.

Both carry their configuration, never bare weights: a training state knows its config hash, an epoch file knows its
model name and options so it can be rebuilt without the run's config.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stainshift.atomic import atomic_path
from stainshift.errors import StainshiftError

FORMAT = 1


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of a JSON-serialisable config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """sha256 of a file, first 16 hex digits (written to manifests so outputs trace back to their checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(obj: dict[str, Any], path: str | Path) -> Path:
    """torch.save to a temporary file next to ``path``, then rename: a crash never leaves a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load(path: str | Path, what: str, fix: str, weights_only: bool = False) -> dict[str, Any]:
    """torch.load with one-line errors naming the file and ``fix``. ``weights_only``: tensors and plain containers
    only (epoch files); training states hold numpy RNG states and need the full unpickler (our own files)."""
    path = Path(path)
    if not path.is_file():
        raise StainshiftError(f"{path}: {what} not found; {fix}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # truncated or foreign file: the user's to fix, one line
        raise StainshiftError(f"{path}: {what} is unreadable ({type(exc).__name__}); {fix}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise StainshiftError(f"{path}: not a stainshift {what} (format {FORMAT}); {fix}")
    return obj
