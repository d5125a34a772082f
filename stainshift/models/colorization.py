"""ColorizationGAN: pix2pix (Isola et al., 2017) in CIE Lab, trained on the TARGET domain only.

The generator sees the lightness L of a target-domain image and predicts its chroma ab; a conditional PatchGAN judges
(L, ab) pairs; the objective is the vanilla GAN loss plus 100 x L1 on ab. At inference the SOURCE image's L goes in
and the output is Lab(L of the source, predicted ab) -> RGB: the structure (lightness) is the input's by
construction, only the colours follow the target hospital. L is scaled to [-1, 1] (L / 50 - 1), ab by 1/110.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.color
import torch
from torch import nn

from stainshift.losses import GAN_MODES, GANLoss
from stainshift.models.base import ModelOptions, TranslationModel, Translator
from stainshift.models.kinds import DataRegime
from stainshift.nets.discriminators import PatchDiscriminator
from stainshift.nets.generators import NORMS, UnetGenerator


@dataclass(frozen=True, kw_only=True)
class ColorizationOptions(ModelOptions):
    """ColorizationGAN options; the defaults are the paper's (the ``paper`` preset: U-Net 256, pix2pix settings)."""

    ngf: int = 64
    num_downs: int = 8              # U-Net depth; crop_size must be a multiple of 2**num_downs (8 -> 256)
    ndf: int = 64
    n_layers_d: int = 3             # 70x70 PatchGAN
    norm: str = "batch"
    dropout: bool = True
    gan_mode: str = "vanilla"
    lambda_L1: float = 100.0
    ab_scale: float = 110.0         # ab / ab_scale -> about [-1, 1]

    def check(self) -> list[str]:
        problems = []
        for name, valid in (("norm", NORMS), ("gan_mode", GAN_MODES)):
            if getattr(self, name) not in valid:
                problems.append(f"{name} {getattr(self, name)!r} is not one of {', '.join(valid)}")
        if min(self.ngf, self.ndf, self.n_layers_d) < 1 or self.num_downs < 2:
            problems.append("ngf, ndf, n_layers_d must be >= 1 and num_downs >= 2")
        elif self.crop_size % 2**self.num_downs:
            problems.append(f"crop_size {self.crop_size} must be a multiple of 2**num_downs = {2**self.num_downs}")
        if self.lambda_L1 < 0 or self.ab_scale <= 0:
            problems.append("lambda_L1 must be >= 0 and ab_scale > 0")
        return problems


def rgb_to_lab(rgb: torch.Tensor, ab_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB in [0, 1] -> (L in [-1, 1], ab / ab_scale), computed in float32."""
    lab = kornia.color.rgb_to_lab(rgb.float().clamp(0, 1))
    return lab[:, :1] / 50.0 - 1.0, lab[:, 1:] / ab_scale


def lab_to_rgb(L: torch.Tensor, ab: torch.Tensor, ab_scale: float) -> torch.Tensor:
    """Inverse of :func:`rgb_to_lab` (out-of-gamut colours clipped), RGB in [0, 1]."""
    lab = torch.cat([(L.float() + 1.0) * 50.0, ab.float() * ab_scale], 1)
    return kornia.color.lab_to_rgb(lab, clip=True).clamp(0, 1)


class ColorizationTranslator(Translator):
    """RGB -> L -> U-Net -> ab; output = Lab(input L, predicted ab) as RGB."""

    def __init__(self, generator: UnetGenerator, options: ColorizationOptions) -> None:
        super().__init__(ColorizationGAN.name, options, generator.multiple, generator.min_size)
        self.generator = generator
        self.ab_scale = options.ab_scale

    def translate_padded(self, x: torch.Tensor) -> torch.Tensor:
        L, _ = rgb_to_lab(x, self.ab_scale)
        return lab_to_rgb(L, self.generator(L), self.ab_scale)


class ColorizationGAN(TranslationModel):
    """pix2pix L -> ab on the target domain; ``train_step`` uses only ``batch["dst"]``."""

    name = "colorization"
    data_regime = DataRegime.TARGET_ONLY
    options_type = ColorizationOptions
    options: ColorizationOptions

    @classmethod
    def presets(cls) -> dict[str, ModelOptions]:
        return {
            # pix2pix settings at the paper's image size: U-Net 256, 64 filters, 286 -> 256, batch 1, 100 + 100
            "paper": ColorizationOptions(),
            # 2 CPU cores: 96 px crops (U-Net of depth 5: 96 -> 3 px), 32 filters, batches of 4 for batch norm;
            # lightness is the input's by construction, so later epochs cannot distort morphology
            "cpu": ColorizationOptions(ngf=32, num_downs=5, ndf=64, load_size=108, crop_size=96, batch_size=4,
                                       epochs=10, epochs_decay=10, keep_epochs=(1, 2, 3, 5, 10, 15, 20)),
            # the tests' size: a few seconds per epoch on one thread
            "tiny": ColorizationOptions(ngf=8, num_downs=5, ndf=8, load_size=36, crop_size=32, batch_size=2,
                                        epochs=2, epochs_decay=0, keep_epochs=(1, 2)),
        }

    @staticmethod
    def _generator(o: ColorizationOptions) -> UnetGenerator:
        return UnetGenerator(1, 2, num_downs=o.num_downs, ngf=o.ngf, norm=o.norm, dropout=o.dropout)

    def __init__(self, options: ColorizationOptions) -> None:
        super().__init__(options)
        o = options
        self.G = self._generator(o)                                          # L -> ab
        self.D = PatchDiscriminator(3, ndf=o.ndf, n_layers=o.n_layers_d, norm=o.norm)  # (L, ab) real or fake
        self.gan_loss = GANLoss(o.gan_mode)
        self._setup_optimizers({"G": self._params(self.G), "D": self._params(self.D)})

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    @classmethod
    def new_translator(cls, options: ModelOptions) -> Translator:
        assert isinstance(options, ColorizationOptions)
        return ColorizationTranslator(cls._generator(options), options)

    def translator(self) -> Translator:
        return ColorizationTranslator(self.G, self.options)

    @torch.enable_grad()
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        o = self.options
        L, ab = rgb_to_lab(self._batch(batch, "dst"), o.ab_scale)  # the source domain plays no part
        ab = ab.clamp(-1, 1)
        self.train()
        with self.autocast():
            fake_ab = self.G(L)

        return self._conditional_gan_step(L, fake_ab, ab, o.lambda_L1)  # D: real (L, ab) vs (L, G(L))
