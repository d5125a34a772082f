"""An unpaired mask -> image CycleGAN (paper 000 turned masks into white-cell images this way): for users whose
masks and images are not pairs, e.g. another site's masks, or synthetic ones, and this site's images.

``G_A`` paints an image from the encoded mask (:mod:`stainshift.synth.encoding`), ``G_B`` segments an image back
into soft region maps (softmax over background / cytoplasm / nucleus, scaled to [-1, 1] like the one-hot input).
``D_A`` judges images of the target, ``D_B`` region maps of the source's masks. Objective: LSGAN losses, cycle
L1 ``lambda_A * |G_B(G_A(m)) - m|`` on the region maps and ``lambda_B * |G_A(G_B(x)) - x|`` on the images, fakes
from history pools of 50; no identity loss (a mask and an image are different things). The translator is ``G_A``.
Batches come from ``DataRegime.UNPAIRED_MASK``: a source mask and a target image drawn independently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stainshift.losses import GAN_MODES, GANLoss, l1_loss
from stainshift.models.base import ModelOptions, TranslationModel, Translator
from stainshift.models.kinds import DataRegime, EpochScoring
from stainshift.models.mask_input import MaskInputOptions, MaskTranslator
from stainshift.models.pool import ImagePool
from stainshift.nets.discriminators import PatchDiscriminator
from stainshift.nets.generators import NORMS, ResnetGenerator
from stainshift.synth.encoding import N_REGIONS


@dataclass(frozen=True, kw_only=True)
class MaskCycleGANOptions(MaskInputOptions):
    """Defaults: CycleGAN's (ResNet-9 generators, 70x70 PatchGANs, LSGAN, pools of 50, cycle weights 10)."""

    ngf: int = 64
    n_blocks: int = 9
    ndf: int = 64
    n_layers_d: int = 3
    norm: str = "instance"
    gan_mode: str = "lsgan"
    pool_size: int = 50
    lambda_A: float = 10.0          # mask -> image -> mask
    lambda_B: float = 10.0          # image -> mask -> image

    def check(self) -> list[str]:
        problems = super().check()
        for name, valid in (("norm", NORMS), ("gan_mode", GAN_MODES)):
            if getattr(self, name) not in valid:
                problems.append(f"{name} {getattr(self, name)!r} is not one of {', '.join(valid)}")
        if min(self.ngf, self.ndf, self.n_layers_d) < 1 or self.n_blocks < 0 or self.pool_size < 0:
            problems.append("ngf, ndf, n_layers_d must be >= 1, n_blocks and pool_size >= 0")
        if min(self.lambda_A, self.lambda_B) < 0:
            problems.append("lambda_A and lambda_B must be >= 0")
        if self.mask_input != "onehot" or self.edges:
            problems.append("maskcyclegan reads one-hot masks without edges (its image -> mask generator returns "
                            "soft one-hot maps): leave mask_input and edges at their defaults")
        if self.crop_size % 2**ResnetGenerator.n_down:
            problems.append(f"crop_size {self.crop_size} must be a multiple of {2**ResnetGenerator.n_down}")
        return problems


class MaskCycleGAN(TranslationModel):
    """Unpaired mask <-> image CycleGAN; ``train_step`` uses ``batch["mask"]`` (source) and ``batch["image"]``."""

    name = "maskcyclegan"
    data_regime = DataRegime.UNPAIRED_MASK
    scoring = EpochScoring.GENERATION
    options_type = MaskCycleGANOptions
    options: MaskCycleGANOptions

    @classmethod
    def presets(cls) -> dict[str, ModelOptions]:
        return {
            "paper": MaskCycleGANOptions(keep_epochs=(10, 25, 50, 100, 150, 200)),
            # the cyclegan cpu preset's generator size (ngf 32, 6 blocks, 96 px)
            "cpu": MaskCycleGANOptions(ngf=32, n_blocks=6, load_size=108, crop_size=96, epochs=10, epochs_decay=10,
                                       keep_epochs=(1, 2, 3, 5, 10, 15, 20)),
            "tiny": MaskCycleGANOptions(ngf=8, n_blocks=1, ndf=8, n_layers_d=2, load_size=36, crop_size=32,
                                        pool_size=4, epochs=2, epochs_decay=0, keep_epochs=(1, 2)),
        }

    @staticmethod
    def _painter(o: MaskCycleGANOptions) -> ResnetGenerator:
        return ResnetGenerator(o.in_channels, 3, ngf=o.ngf, n_blocks=o.n_blocks, norm=o.norm)

    def __init__(self, options: MaskCycleGANOptions) -> None:
        super().__init__(options)
        o = options
        self.G_A = self._painter(o)                                                        # mask -> image
        self.G_B = ResnetGenerator(3, N_REGIONS, ngf=o.ngf, n_blocks=o.n_blocks, norm=o.norm)  # image -> regions
        self.D_A = PatchDiscriminator(3, ndf=o.ndf, n_layers=o.n_layers_d, norm=o.norm)
        self.D_B = PatchDiscriminator(N_REGIONS, ndf=o.ndf, n_layers=o.n_layers_d, norm=o.norm)
        self.gan_loss = GANLoss(o.gan_mode)
        self.pool_A, self.pool_B = ImagePool(o.pool_size), ImagePool(o.pool_size)
        self._setup_optimizers({"G": self._params(self.G_A, self.G_B), "D": self._params(self.D_A, self.D_B)})

    def networks(self) -> dict[str, nn.Module]:
        return {"G_A": self.G_A, "G_B": self.G_B, "D_A": self.D_A, "D_B": self.D_B}

    def pools(self) -> dict[str, ImagePool]:
        return {"A": self.pool_A, "B": self.pool_B}

    @classmethod
    def new_translator(cls, options: ModelOptions) -> Translator:
        assert isinstance(options, MaskCycleGANOptions)
        return MaskTranslator(cls.name, cls._painter(options), options)

    def translator(self) -> Translator:
        return MaskTranslator(self.name, self.G_A, self.options)

    def _segment(self, image: torch.Tensor) -> torch.Tensor:
        """Soft region maps in [-1, 1]: softmax of the generator's tanh output x 4 (logits in [-4, 4], so a region
        can reach a probability near 1)."""
        return torch.softmax(self.G_B(image).float() * 4, dim=1) * 2 - 1

    @torch.enable_grad()
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        o = self.options
        mask = self._batch(batch, "mask", channels=1)
        cond = o.encode(mask)                     # one-hot regions (+ noise channels)
        regions, noise = cond[:, :N_REGIONS], cond[:, N_REGIONS:]
        real = self._batch(batch, "image") * 2 - 1
        self.train()
        with self.autocast():
            fake_image = self.G_A(cond)
            cycle_regions = self._segment(fake_image)
            fake_regions = self._segment(real)
            cycle_image = self.G_A(torch.cat([fake_regions.to(noise.dtype), noise], 1))

        self._requires_grad([self.D_A, self.D_B], False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        with self.autocast():
            loss_G_A = self.gan_loss(self.D_A(fake_image), True, False)
            loss_G_B = self.gan_loss(self.D_B(fake_regions), True, False)
            loss_cycle_A = l1_loss(cycle_regions, regions) * o.lambda_A
            loss_cycle_B = l1_loss(cycle_image, real) * o.lambda_B
            loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B
        self._step("G", loss_G, self._params(self.G_A, self.G_B))

        self._requires_grad([self.D_A, self.D_B], True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        with self.autocast():
            old_image = self.pool_A.query(fake_image)
            old_regions = self.pool_B.query(fake_regions)
            loss_D_A = 0.5 * (self.gan_loss(self.D_A(real), True) + self.gan_loss(self.D_A(old_image), False))
            loss_D_B = 0.5 * (self.gan_loss(self.D_B(regions), True) + self.gan_loss(self.D_B(old_regions), False))
        self._step("D", loss_D_A + loss_D_B, self._params(self.D_A, self.D_B))

        names = ("G_A", "G_B", "cycle_A", "cycle_B", "D_A", "D_B")
        values = torch.stack([loss_G_A, loss_G_B, loss_cycle_A, loss_cycle_B, loss_D_A, loss_D_B]).detach().float()
        return dict(zip(names, values.tolist(), strict=True))
