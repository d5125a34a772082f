"""Pretrained weights come only from files the user passes: nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

import torch

from stainshift.errors import StainshiftError


def load_local_weights(model: torch.nn.Module, path: str | Path | None, what: str, strict: bool = False) -> list[str]:
    """Load a local state-dict file into ``model``; returns the names of keys that were not loaded.

    ``path=None`` is an error naming the option to use, because stainshift never fetches weights from a hub.
    """
    if path is None:
        raise StainshiftError(f"pretrained {what} weights were requested but stainshift never downloads them; "
                              "pass a local file with --weights PATH (or train from scratch without it)")
    path = Path(path)
    if not path.is_file():
        raise StainshiftError(f"{path}: weights file not found; pass an existing .pt/.pth/.safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is the user's to fix: one line, no traceback
        raise StainshiftError(f"{path}: cannot read weights ({type(exc).__name__}); re-download the file") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise StainshiftError(f"{path}: no tensor matches {what} (wrong architecture?); pass weights for it")
    model.load_state_dict(usable, strict=False)
    skipped = sorted(set(own) - set(usable))
    if strict and skipped:
        raise StainshiftError(f"{path}: {len(skipped)} {what} tensors missing or mis-shaped, e.g. {skipped[0]}")
    return skipped
