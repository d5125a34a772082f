"""ResNet classifiers (timm) that measure what harmonization gains: build, save, load.

    >>> clf = build_classifier("resnet18", 4, norm="group", classes=["neutrophil", "lymphocyte", "monocyte", "blast"])
    >>> logits = clf(images)            # float (B, 3, H, W) in [0, 1]; ImageNet normalization happens inside
    >>> save_classifier(clf, "runs/classifiers/clinic-resnet18-group/model.pt", {"domain": "clinic"})
    >>> clf = load_classifier("runs/classifiers/clinic-resnet18-group/model.pt")

Normalization layers (``norm``):

- ``batch``: timm's BatchNorm2d. Its running statistics are the training hospital's, so they shift with staining too.
- ``group`` (the default everywhere): every BatchNorm2d replaced by GroupNorm (32 groups or the largest divisor of
  the channels below that), affine parameters copied; per-image statistics, nothing learnt about the training
  site's colour distribution.
- ``frozen-batch``: BatchNorm frozen to its loaded statistics and affine parameters (torchvision/timm
  FrozenBatchNorm2d); meant for fine-tuning from ``weights``. Without weights the layers are identities.

Weights are never downloaded: ``weights`` is a local state-dict file (timm's ImageNet ResNet, or another classifier
file); tensors whose name or shape do not match (the class head, typically) keep their fresh initialization.
A classifier file holds its architecture, classes and input size as well as the weights, so it rebuilds alone.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stainshift.errors import StainshiftError
from stainshift.train.checkpoints import FORMAT, save

ARCHS = ("resnet18", "resnet34")
NORMS = ("batch", "group", "frozen-batch")
KIND = "classifier"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def group_count(channels: int, max_groups: int = 32) -> int:
    """The largest number of groups <= ``max_groups`` that divides ``channels``."""
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


def batch_to_group_norm(module: nn.Module, max_groups: int = 32) -> nn.Module:
    """Replace every BatchNorm2d inside ``module`` by GroupNorm, keeping its affine weight and bias."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            gn = nn.GroupNorm(group_count(child.num_features, max_groups), child.num_features, eps=child.eps)
            if child.affine:
                with torch.no_grad():
                    gn.weight.copy_(child.weight)
                    gn.bias.copy_(child.bias)
            setattr(module, name, gn)
        else:
            batch_to_group_norm(child, max_groups)
    return module


def _check_choice(value: str, valid: Sequence[str], what: str) -> None:
    if value not in valid:
        raise StainshiftError(f"unknown {what} '{value}'; use one of {', '.join(valid)}")


def build_net(arch: str, n_classes: int, norm: str = "group", weights: str | Path | None = None) -> nn.Module:
    """The bare timm ResNet (raw logits, expects ImageNet-normalized input), weights loaded before ``norm``."""
    import timm

    _check_choice(arch, ARCHS, "architecture")
    _check_choice(norm, NORMS, "norm")
    if n_classes < 1:
        raise StainshiftError(f"a classifier needs at least one class (got {n_classes})")
    net = timm.create_model(arch, pretrained=False, num_classes=n_classes)
    if weights is not None:
        from stainshift.weights import load_local_weights

        skipped = load_local_weights(net, weights, f"{arch} classifier")
        body = [k for k in skipped if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
        if body:
            warnings.warn(f"{weights}: {len(body)} {arch} tensors were not in the file and keep their random "
                          f"initialization (e.g. {body[0]})", stacklevel=2)
    if norm == "group":
        batch_to_group_norm(net)
    elif norm == "frozen-batch":
        from timm.layers import freeze_batch_norm_2d

        if weights is None:
            warnings.warn("norm 'frozen-batch' without --weights: the frozen layers keep mean 0 / variance 1 and "
                          "act as identities", stacklevel=2)
        net = freeze_batch_norm_2d(net)
    return net


class Classifier(nn.Module):
    """A timm ResNet with its class names, input size and input normalization.

    Input: float (B, 3, H, W) in [0, 1], cells centred and at the project's common diameter (as the datasets give
    them, ``input_size`` square); the network is fully convolutional, so other sizes run too.
    """

    def __init__(self, net: nn.Module, classes: Sequence[str], input_size: int, arch: str, norm: str,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.net = net
        self.classes = list(classes)
        self.input_size = int(input_size)
        self.arch, self.norm = arch, norm
        self.config: dict[str, Any] = dict(config or {})
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise StainshiftError(f"classifier input must be float (B, 3, H, W) in [0, 1], got shape {tuple(x.shape)}")
        return (x.float() - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_classes)."""
        return self.net(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, D): the globally pooled output of the last ResNet stage."""
        return self.net.forward_head(self.net.forward_features(self.normalize(x)), pre_logits=True)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Predicted class indices (B,), computed in eval mode (the training mode is restored afterwards)."""
        was_training = self.training
        self.eval()
        try:
            device = self.mean.device
            out = [self(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def extra_repr(self) -> str:
        return f"arch={self.arch}, norm={self.norm}, input_size={self.input_size}, classes={self.classes}"


def build_classifier(arch: str, n_classes: int, norm: str = "group", weights: str | Path | None = None,
                     classes: Sequence[str] | None = None, input_size: int = 96) -> Classifier:
    """A :class:`Classifier` (``arch`` resnet18 | resnet34, ``norm`` group (default) | batch | frozen-batch).

    ``classes`` names the outputs (default ``class_0`` ...); ``weights`` is a local state-dict file.
    """
    names = list(classes) if classes is not None else [f"class_{i}" for i in range(n_classes)]
    if len(names) != n_classes or len(set(names)) != len(names):
        raise StainshiftError(f"classes {names}: need {n_classes} distinct class names")
    net = build_net(arch, n_classes, norm, weights)
    return Classifier(net, names, input_size, arch, norm)


def save_classifier(clf: Classifier, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the classifier atomically: format, arch, norm, classes, input size, weights and ``extra`` as config.

    ``extra`` is stored as its JSON form (paths and other objects become strings), so the file loads with
    ``weights_only=True``: opening a classifier never runs pickled code.
    """
    config = json.loads(json.dumps({**clf.config, **(extra or {})}, default=str))
    obj = {"format": FORMAT, "kind": KIND, "arch": clf.arch, "norm": clf.norm, "classes": list(clf.classes),
           "input_size": clf.input_size, "config": config,
           "state_dict": {k: v.detach().cpu().clone() for k, v in clf.net.state_dict().items()}}
    return save(obj, path)


_FIX = "train one with `stainshift classify train --domain NAME` or pass the model.pt of a classifier run"


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild a classifier saved by :func:`save_classifier` (eval mode); one-line errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise StainshiftError(f"{path}: classifier file not found; {_FIX}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or pickled-code file: one line, no traceback
        raise StainshiftError(f"{path}: not a readable stainshift classifier ({type(exc).__name__}); {_FIX}") from None
    keys = ("arch", "norm", "classes", "input_size", "state_dict")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("kind") != KIND or any(
            k not in obj for k in keys):
        raise StainshiftError(f"{path}: not a stainshift classifier (format {FORMAT}); {_FIX}")
    if obj["arch"] not in ARCHS or obj["norm"] not in NORMS:
        raise StainshiftError(f"{path}: unsupported classifier {obj['arch']}/{obj['norm']}; {_FIX}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the frozen-batch "no weights" warning: the weights come next
        clf = build_classifier(obj["arch"], len(obj["classes"]), obj["norm"], None, obj["classes"],
                               obj["input_size"])
    try:
        clf.net.load_state_dict(obj["state_dict"], strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise StainshiftError(f"{path}: weights do not fit a {obj['arch']} ({first}); the file is damaged") from None
    clf.config = dict(obj.get("config") or {})
    return clf.to(device).eval()
