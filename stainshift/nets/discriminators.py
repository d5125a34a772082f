"""The PatchGAN discriminator of pix2pix / CycleGAN."""

from __future__ import annotations

import torch
from torch import nn

from stainshift.nets.generators import _uses_bias, init_weights, norm_layer


def _strided_convs(in_ch: int, ndf: int, strides: list[int], norm: str) -> tuple[list[nn.Module], int]:
    """A stride-2 4x4 convolution to ``ndf`` channels without norm, then one normed 4x4 convolution per stride
    (channels 2ndf, 4ndf, ... capped at 8ndf), LeakyReLU 0.2 after each; returns the layers and their last width."""
    make_norm, bias = norm_layer(norm), _uses_bias(norm)
    layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
    ch = ndf
    for n, stride in enumerate(strides, start=1):
        nxt = ndf * min(2**n, 8)
        layers += [nn.Conv2d(ch, nxt, 4, stride=stride, padding=1, bias=bias), make_norm(nxt), nn.LeakyReLU(0.2, True)]
        ch = nxt
    return layers, ch


class PatchDiscriminator(nn.Module):
    """Convolutional real/fake classifier of overlapping patches: one logit per patch (no sigmoid).

    4x4 convolutions: ``n_layers`` with stride 2 (the first without norm), one with stride 1, then a 1-channel
    stride-1 output, LeakyReLU 0.2 between them; channels ndf, 2ndf, ... capped at 8ndf. ``n_layers=3`` gives the
    70x70 PatchGAN (each output sees a 70x70 input window).
    """

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        if n_layers < 1 or ndf < 1:
            raise ValueError(f"n_layers and ndf must be >= 1 (got {n_layers}, {ndf})")
        layers, ch = _strided_convs(in_ch, ndf, [2] * (n_layers - 1) + [1], norm)
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    @staticmethod
    def receptive_field(n_layers: int = 3) -> int:
        """Input window (pixels) seen by one output logit: 70 for ``n_layers=3``."""
        rf = 1
        for stride in [1, 1] + [2] * n_layers:  # walk back from the output layer
            rf = (rf - 1) * stride + 4
        return rf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class GlobalDiscriminator(nn.Module):
    """One real/fake logit per image (paper 004's alternative to the PatchGAN): ``n_layers`` stride-2 4x4
    convolutions (channels ndf, 2ndf, ... capped at 8ndf, LeakyReLU 0.2, norm after the first), then the mean over
    all positions and a linear layer. Every pixel can weigh on the verdict, whatever the image size."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 5, norm: str = "instance") -> None:
        super().__init__()
        if n_layers < 1 or ndf < 1:
            raise ValueError(f"n_layers and ndf must be >= 1 (got {n_layers}, {ndf})")
        layers, ch = _strided_convs(in_ch, ndf, [2] * (n_layers - 1), norm)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))
