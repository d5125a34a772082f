"""What the mask -> image models share: the options of their mask input and the translator around a generator.

Each model's options subclass :class:`MaskInputOptions` (how a label map becomes generator input channels, see
:mod:`stainshift.synth.encoding`); :class:`MaskTranslator` takes B x 1 x H x W label maps and returns RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stainshift.models.base import ModelOptions, Translator
from stainshift.synth.encoding import MaskInput, encode, input_channels


@dataclass(frozen=True, kw_only=True)
class MaskInputOptions(ModelOptions):
    """How the label map is fed to the generator."""

    mask_input: str = "onehot"      # "onehot" regions or a "colour"-coded mask (paper 002)
    edges: bool = False             # add a region-boundary channel (pix2pixHD's instance edges)
    noise_channels: int = 0         # paper 004: mask + noise

    def check(self) -> list[str]:
        problems = []
        if self.mask_input not in tuple(MaskInput):
            problems.append(f"mask_input {self.mask_input!r} is not one of {', '.join(MaskInput)}")
        if self.noise_channels < 0:
            problems.append("noise_channels must be >= 0")
        return problems

    @property
    def in_channels(self) -> int:
        return input_channels(self.mask_input, self.edges, self.noise_channels)

    def encode(self, labels: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        return encode(labels, self.mask_input, self.edges, self.noise_channels, instances)


class MaskTranslator(Translator):
    """Label map (B x 1 x H x W mask values) -> encoding -> generator (tanh) -> RGB in [0, 1]."""

    def __init__(self, name: str, generator: nn.Module, options: MaskInputOptions) -> None:
        super().__init__(name, options, generator.multiple, generator.min_size, in_channels=1)
        self.generator = generator
        self.encoding = options

    def translate_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(self.encoding.encode(x.float())).float().add(1).div(2).clamp(0, 1)
