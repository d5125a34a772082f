"""pix2pix from masks (Isola et al., 2017, as used by papers 002 and 004): a cell mask in, a stained image out.

Trained on a domain's images with their own masks (``DataRegime.PAIRED_MASK``). The U-Net generator sees the mask
encoded by :mod:`stainshift.synth.encoding` (one-hot regions or a colour-coded mask, optionally an edge map and
paper 004's noise channels); a conditional discriminator judges (mask, image) pairs: the 70x70 PatchGAN of pix2pix,
or paper 004's global (whole-image) discriminator. Objective: vanilla GAN loss + 100 x L1 to the real image, batch
norm, no image pool. With noise channels the translator draws fresh noise from torch's global RNG on every call, so
``torch.manual_seed`` fixes a generation; the reference authors found that pix2pix largely ignores such noise
(``benchmarks/synth_models.py`` measures how much it changes the outputs here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stainshift.losses import GAN_MODES, GANLoss
from stainshift.models.base import ModelOptions, TranslationModel, Translator
from stainshift.models.kinds import DataRegime, EpochScoring
from stainshift.models.mask_input import MaskInputOptions, MaskTranslator
from stainshift.nets.discriminators import GlobalDiscriminator, PatchDiscriminator
from stainshift.nets.generators import NORMS, UnetGenerator

DISCRIMINATORS = ("patch", "global")


@dataclass(frozen=True, kw_only=True)
class Pix2PixOptions(MaskInputOptions):
    """pix2pix options; the defaults are the paper's (U-Net 256, 70x70 PatchGAN, L1 weight 100)."""

    ngf: int = 64
    num_downs: int = 8              # U-Net depth; crop_size must be a multiple of 2**num_downs (8 -> 256)
    ndf: int = 64
    n_layers_d: int = 3             # patch: 70x70 PatchGAN; global: stride-2 layers before the mean
    discriminator: str = "patch"    # "patch" or "global" (paper 004)
    norm: str = "batch"
    dropout: bool = True
    gan_mode: str = "vanilla"
    lambda_L1: float = 100.0

    def check(self) -> list[str]:
        problems = super().check()
        for name, valid in (("norm", NORMS), ("gan_mode", GAN_MODES), ("discriminator", DISCRIMINATORS)):
            if getattr(self, name) not in valid:
                problems.append(f"{name} {getattr(self, name)!r} is not one of {', '.join(valid)}")
        if min(self.ngf, self.ndf, self.n_layers_d) < 1 or self.num_downs < 2:
            problems.append("ngf, ndf, n_layers_d must be >= 1 and num_downs >= 2")
        elif self.crop_size % 2**self.num_downs:
            problems.append(f"crop_size {self.crop_size} must be a multiple of 2**num_downs = {2**self.num_downs}")
        if self.lambda_L1 < 0:
            problems.append("lambda_L1 must be >= 0")
        return problems


class Pix2Pix(TranslationModel):
    """pix2pix mask -> image; ``train_step`` uses ``batch["mask"]`` and ``batch["image"]``."""

    name = "pix2pix"
    data_regime = DataRegime.PAIRED_MASK
    scoring = EpochScoring.GENERATION
    options_type = Pix2PixOptions
    options: Pix2PixOptions

    @classmethod
    def presets(cls) -> dict[str, ModelOptions]:
        return {
            # the paper's settings: U-Net 256, 64 filters, 286 -> 256, batch 1, 100 + 100 epochs
            "paper": Pix2PixOptions(keep_epochs=(10, 25, 50, 100, 150, 200)),
            # 2 CPU cores: 96 px crops (U-Net of depth 5), 32 filters, batches of 4 for batch norm
            # (seconds per iteration: benchmarks/results/synth_models.md)
            "cpu": Pix2PixOptions(ngf=32, num_downs=5, ndf=64, load_size=108, crop_size=96, batch_size=4,
                                  epochs=10, epochs_decay=10, keep_epochs=(1, 2, 3, 5, 10, 15, 20)),
            # paper 004's variant at the cpu size: two noise channels, a whole-image discriminator
            "cpu-noise-global": Pix2PixOptions(ngf=32, num_downs=5, ndf=64, load_size=108, crop_size=96,
                                               batch_size=4, epochs=10, epochs_decay=10, noise_channels=2,
                                               discriminator="global", n_layers_d=5,
                                               keep_epochs=(1, 2, 3, 5, 10, 15, 20)),
            "tiny": Pix2PixOptions(ngf=8, num_downs=5, ndf=8, load_size=36, crop_size=32, batch_size=2,
                                   epochs=2, epochs_decay=0, keep_epochs=(1, 2)),
        }

    @staticmethod
    def _generator(o: Pix2PixOptions) -> UnetGenerator:
        return UnetGenerator(o.in_channels, 3, num_downs=o.num_downs, ngf=o.ngf, norm=o.norm, dropout=o.dropout)

    def __init__(self, options: Pix2PixOptions) -> None:
        super().__init__(options)
        o = options
        self.G = self._generator(o)
        d_in = o.in_channels + 3  # conditional: (mask encoding, image)
        self.D = (PatchDiscriminator(d_in, ndf=o.ndf, n_layers=o.n_layers_d, norm=o.norm) if o.discriminator == "patch"
                  else GlobalDiscriminator(d_in, ndf=o.ndf, n_layers=o.n_layers_d, norm=o.norm))
        self.gan_loss = GANLoss(o.gan_mode)
        self._setup_optimizers({"G": self._params(self.G), "D": self._params(self.D)})

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    @classmethod
    def new_translator(cls, options: ModelOptions) -> Translator:
        assert isinstance(options, Pix2PixOptions)
        return MaskTranslator(cls.name, cls._generator(options), options)

    def translator(self) -> Translator:
        return MaskTranslator(self.name, self.G, self.options)

    @torch.enable_grad()
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        o = self.options
        real = self._batch(batch, "image") * 2 - 1
        cond = o.encode(self._batch(batch, "mask", channels=1))  # one noise draw serves G and both D passes
        self.train()
        with self.autocast():
            fake = self.G(cond)

        return self._conditional_gan_step(cond, fake, real, o.lambda_L1)
