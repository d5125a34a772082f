"""Choosing the torch device from a user's ``--device`` text."""

from __future__ import annotations

import torch

from stainshift.errors import StainshiftError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; one-line errors otherwise."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StainshiftError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StainshiftError(f"device '{name}' requested but no CUDA GPU is available; use --device cpu")
    return device
