"""A small CNN baseline classifier for single-cell crops: train it on one hospital, measure it on another.

    >>> model = train_baseline(train_images, train_labels, epochs=10, seed=0)   # uint8 (N, H, W, 3)
    >>> accuracy(model, test_images, test_labels)
    0.97

Plain torch loop (Adam, flips and 90-degree rotations), deterministic for a given seed on a given machine. The
global torch thread count is left untouched. Inputs are resized to ``input_size`` (64 px by default) and scaled
to 0..1; BatchNorm statistics are those of the training hospital, as in a real deployment.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stainshift.errors import StainshiftError

ArrayLike = np.ndarray | torch.Tensor


class BaselineCNN(nn.Module):
    """Four conv blocks (conv 3x3, BatchNorm, ReLU, max-pool), global average pooling, a linear head."""

    def __init__(self, n_classes: int, width: int = 16, input_size: int = 64,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 6 * width]
        blocks: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(chans[-1], n_classes)
        self.input_size = input_size
        self.class_names = tuple(class_names) if class_names is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_classes) for float images (N, 3, input_size, input_size) in 0..1."""
        x = self.features(x - 0.5)
        return self.head(x.mean(dim=(2, 3)))


def to_input(images: ArrayLike, input_size: int = 64) -> torch.Tensor:
    """uint8 (N, H, W, 3) array or tensor -> float (N, 3, input_size, input_size) in 0..1."""
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise StainshiftError(f"images: expected an (N, H, W, 3) uint8 array, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float()
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=True, align_corners=False)
    return (x / 255.0).clamp_(0.0, 1.0).contiguous()


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips per sample and one random 90-degree rotation per batch."""
    n = x.shape[0]
    flip_h = torch.rand(n, generator=gen) < 0.5
    flip_v = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(3), x)
    x = torch.where(flip_v[:, None, None, None], x.flip(2), x)
    k = int(torch.randint(0, 4, (1,), generator=gen))
    return torch.rot90(x, k, dims=(2, 3)) if k else x


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed torch's global RNG (parameter init) and restore it, plus deterministic algorithms, afterwards."""
    state = torch.get_rng_state()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_rng_state(state)
        torch.use_deterministic_algorithms(was_deterministic)


@torch.no_grad()
def _recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Set BatchNorm running statistics to the exact mean/variance over the training images (no augmentation).

    The exponential running averages lag behind after short trainings; this one extra forward pass makes the
    eval-mode model match what it learnt.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for start in range(0, len(x), batch_size):
        model(x[start:start + batch_size])
    for m in norms:
        m.momentum = 0.1


def train_baseline(images: ArrayLike, labels: ArrayLike, epochs: int = 10, seed: int = 0, *,
                   n_classes: int | None = None, class_names: Sequence[str] | None = None, batch_size: int = 64,
                   lr: float = 3e-3, width: int = 16, input_size: int = 64, progress: bool = False) -> BaselineCNN:
    """Train a :class:`BaselineCNN` on uint8 (N, H, W, 3) images and integer labels; returns it in eval mode."""
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).long()
    if epochs < 1:
        raise StainshiftError(f"epochs={epochs}: pass a number of epochs >= 1")
    x = to_input(images, input_size)
    if len(x) != len(y) or len(y) == 0:
        raise StainshiftError(f"train_baseline: {len(x)} images but {len(y)} labels; pass one label per image")
    n_classes = n_classes or (len(class_names) if class_names else int(y.max()) + 1)
    with _deterministic(seed):
        model = BaselineCNN(n_classes, width, input_size, class_names)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
        steps = epochs * ((len(y) + batch_size - 1) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps, desc="train baseline", unit="step")
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), batch_size):
                idx = order[start:start + batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                loss = F.cross_entropy(model(_augment(x[idx], gen)), y[idx], label_smoothing=0.05)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}")
        if bar is not None:
            bar.close()
        _recalibrate_batchnorm(model, x, batch_size)
    return model.eval()


@torch.no_grad()
def predict(model: BaselineCNN, images: ArrayLike, batch_size: int = 256) -> np.ndarray:
    """Predicted class indices (N,) for uint8 (N, H, W, 3) images."""
    was_training = model.training
    model.eval()
    x = to_input(images, model.input_size)
    out = [model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def accuracy(model: BaselineCNN, images: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of ``images`` whose predicted class equals ``labels``."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if len(y) == 0:
        raise StainshiftError("accuracy: no images given; pass at least one image and label")
    return float((predict(model, images) == y).mean())


def per_class_accuracy(predicted: ArrayLike, labels: ArrayLike, n_classes: int) -> np.ndarray:
    """Accuracy of each class (n_classes,), NaN for a class absent from ``labels``."""
    p, y = np.asarray(predicted), np.asarray(labels)
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        sel = y == c
        if sel.any():
            out[c] = float((p[sel] == c).mean())
    return out
