"""A small segmenter to ask what generated images are worth: a U-Net trained on image/label pairs, scored by Dice.

The U-Net is segmentation-models-pytorch's, a ResNet18 encoder from scratch (nothing is downloaded) with a slim
decoder. Training draws each batch in equal shares from its sources (e.g. real and generated pairs), one random
crop per image, Adam at 1e-3, cross-entropy. ``benchmarks/synthesis.py`` measures with it, and ``select --rule
segmentation`` ranks a mask-to-image run's epochs by it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

Augment = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def make_unet(seed: int, classes: int = 3) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    return smp.Unet("resnet18", encoder_weights=None, classes=classes, decoder_channels=(128, 64, 32, 16, 8))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float centred on 0."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0).sub(0.5)


def random_crop(image: np.ndarray, target: np.ndarray, crop: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    h, w = target.shape
    y = int(rng.integers(0, h - crop + 1))
    x = int(rng.integers(0, w - crop + 1))
    return image[y:y + crop, x:x + crop], target[y:y + crop, x:x + crop]


def train_segmenter(sources: Sequence[tuple[np.ndarray, np.ndarray]], seed: int, iters: int, crop: int, batch: int,
                    augment: Augment | None = None, classes: int = 3,
                    progress: Callable[[int], None] | None = None) -> torch.nn.Module:
    """A U-Net trained for ``iters`` steps on ``(images N x H x W x 3 uint8, labels N x H x W)`` sources; each batch
    takes equal shares from each source. The same seed gives the same initial weights and draws."""
    model = make_unet(seed, classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng([seed, 99])
    model.train()
    for step in range(iters):
        xs, ys = [], []
        for b in range(batch):
            images, targets = sources[b % len(sources)]
            k = int(rng.integers(len(images)))
            x, y = random_crop(images[k], targets[k], crop, rng)
            if augment is not None:
                x, y = augment(x, y, rng)
            xs.append(x)
            ys.append(y)
        logits = model(to_tensor(np.stack(xs)))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(np.stack(ys)).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress:
            progress(step)
    return model


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """Label maps for N x H x W x 3 uint8 images (reflect-padded to a multiple of 32 and cropped back)."""
    model.eval()
    h, w = images.shape[1:3]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    padded = np.pad(images, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="reflect")
    out = [model(to_tensor(padded[i:i + 16])).argmax(1)[:, :h, :w].numpy() for i in range(0, len(images), 16)]
    return np.concatenate(out).astype(np.uint8)


def dice_per_image(pred: np.ndarray, truth: np.ndarray, classes: Sequence[int] = (1, 2)) -> np.ndarray:
    """(n, len(classes)) Dice per image and foreground class (1 when a class is absent from both)."""
    out = np.zeros((len(pred), len(classes)))
    for j, cls in enumerate(classes):
        p, t = pred == cls, truth == cls
        inter = (p & t).sum(axis=(1, 2))
        total = p.sum(axis=(1, 2)) + t.sum(axis=(1, 2))
        out[:, j] = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    return out
