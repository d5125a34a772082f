"""CycleGAN (Zhu et al., 2017): unpaired translation between a source domain A and a target domain B.

Networks: ``G_A`` (A -> B, the translator), ``G_B`` (B -> A), ``D_A`` (real vs fake images of A) and ``D_B`` (of B).
Objective: LSGAN adversarial losses, cycle consistency ``lambda_A * |G_B(G_A(a)) - a| + lambda_B * |G_A(G_B(b)) - b|``
and identity ``lambda_identity * (lambda_B * |G_A(b) - b| + lambda_A * |G_B(a) - a|)``; discriminators see fakes from
a history pool of 50 images and their loss is halved. Images are scaled to [-1, 1] inside the model.

Options beyond the paper, for stable small-data training: ``ema_decay`` > 0 keeps an exponential moving average of
``G_A``'s weights (``G_A_ema``, updated after every generator step), and the translator (epoch files, selection,
harmonize) is that average rather than the last step's weights; ``upsample = "resize"`` builds the generators with
resize-convolutions instead of transposed convolutions (no checkerboards).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stainshift.losses import GAN_MODES, GANLoss, l1_loss
from stainshift.models.base import ModelOptions, TanhGeneratorTranslator, TranslationModel, Translator
from stainshift.models.pool import ImagePool
from stainshift.nets.averaging import WeightAverage
from stainshift.nets.discriminators import PatchDiscriminator
from stainshift.nets.generators import NORMS, PADDINGS, UPSAMPLINGS, ResnetGenerator


@dataclass(frozen=True, kw_only=True)
class CycleGANOptions(ModelOptions):
    """CycleGAN options; the defaults are the paper's (the ``paper`` preset)."""

    ngf: int = 64                   # filters of the generators' first layer
    n_blocks: int = 9               # residual blocks (9: the 256x256 generator)
    ndf: int = 64                   # filters of the discriminators' first layer
    n_layers_d: int = 3             # 3: the 70x70 PatchGAN
    norm: str = "instance"
    padding: str = "reflect"
    gan_mode: str = "lsgan"
    pool_size: int = 50
    lambda_A: float = 10.0          # cycle loss A -> B -> A
    lambda_B: float = 10.0          # cycle loss B -> A -> B
    lambda_identity: float = 0.5    # identity loss weight, relative to the lambdas (0.5 * 10 = 5)
    ema_decay: float = 0.0          # > 0: translate with an exponential moving average of G_A (e.g. 0.995)
    upsample: str = "transpose"     # generator upsampling: transpose (the paper) or resize (no checkerboards)

    def check(self) -> list[str]:
        problems = []
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must be in [0, 1) (got {self.ema_decay}; 0 turns the average off)")
        for name, valid in (("norm", NORMS), ("padding", PADDINGS), ("gan_mode", GAN_MODES),
                            ("upsample", UPSAMPLINGS)):
            if getattr(self, name) not in valid:
                problems.append(f"{name} {getattr(self, name)!r} is not one of {', '.join(valid)}")
        if min(self.ngf, self.ndf, self.n_layers_d) < 1 or self.n_blocks < 0 or self.pool_size < 0:
            problems.append("ngf, ndf, n_layers_d must be >= 1, n_blocks and pool_size >= 0")
        if min(self.lambda_A, self.lambda_B, self.lambda_identity) < 0:
            problems.append("lambda_A, lambda_B, lambda_identity must be >= 0")
        multiple = 2**ResnetGenerator.n_down
        if self.crop_size % multiple:
            problems.append(f"crop_size {self.crop_size} must be a multiple of {multiple}")
        return problems


class CycleGAN(TranslationModel):
    """Unpaired two-domain translation; ``translator()`` is ``G_A``: src -> dst."""

    name = "cyclegan"
    options_type = CycleGANOptions
    options: CycleGANOptions

    @classmethod
    def presets(cls) -> dict[str, ModelOptions]:
        return {
            # Pérez et al. with the reference settings: ResNet-9, 64 filters, 100 + 100 epochs, 286 -> 256, batch 1,
            # generators kept at the epochs the paper compared
            "paper": CycleGANOptions(),
            # 2 CPU cores: ngf 32 / 6 blocks / 96 px is ~0.6 s per iteration (benchmarks/results/train_speed.md);
            # small data peaks within the first epochs, so keep every early epoch and train 10 at constant LR
            "cpu": CycleGANOptions(ngf=32, n_blocks=6, ndf=64, load_size=108, crop_size=96, batch_size=1, epochs=10,
                                   epochs_decay=0, keep_epochs=(1, 2, 3, 4, 5, 7, 10)),
            # the simulated demo's 96 px cells: ngf 16 / 3 blocks / 64 px crops is ~12x cheaper per iteration than
            # `cpu`; a higher learning rate, as there are only a few short epochs
            "demo": CycleGANOptions(ngf=16, n_blocks=3, ndf=32, load_size=72, crop_size=64, batch_size=1, epochs=5,
                                    epochs_decay=0, lr=5e-4, keep_epochs=(1, 2, 3, 4, 5)),
            # the tests' size: a few seconds per epoch on one thread
            "tiny": CycleGANOptions(ngf=4, n_blocks=1, ndf=4, load_size=32, crop_size=32, batch_size=1, epochs=2,
                                    epochs_decay=0, keep_epochs=(1, 2)),
        }

    @staticmethod
    def _generator(o: CycleGANOptions) -> ResnetGenerator:
        return ResnetGenerator(3, 3, ngf=o.ngf, n_blocks=o.n_blocks, norm=o.norm, padding=o.padding,
                               upsample=o.upsample)

    @staticmethod
    def _discriminator(o: CycleGANOptions) -> PatchDiscriminator:
        return PatchDiscriminator(3, ndf=o.ndf, n_layers=o.n_layers_d, norm=o.norm)

    def __init__(self, options: CycleGANOptions) -> None:
        super().__init__(options)
        o = options
        self.G_A = self._generator(o)  # A -> B (src -> dst)
        self.G_B = self._generator(o)  # B -> A
        self.D_A = self._discriminator(o)  # judges images of A (G_B's outputs)
        self.D_B = self._discriminator(o)  # judges images of B (G_A's outputs)
        self.gan_loss = GANLoss(o.gan_mode)
        self.pool_A = ImagePool(o.pool_size)  # past fakes of A, for D_A
        self.pool_B = ImagePool(o.pool_size)  # past fakes of B, for D_B
        self.G_A_ema = WeightAverage(self.G_A, o.ema_decay) if o.ema_decay > 0 else None
        self._setup_optimizers({"G": self._params(self.G_A, self.G_B), "D": self._params(self.D_A, self.D_B)})

    def networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"G_A": self.G_A, "G_B": self.G_B, "D_A": self.D_A, "D_B": self.D_B}
        if self.G_A_ema is not None:
            nets["G_A_ema"] = self.G_A_ema
        return nets

    def pools(self) -> dict[str, ImagePool]:
        return {"A": self.pool_A, "B": self.pool_B}

    @classmethod
    def new_translator(cls, options: ModelOptions) -> Translator:
        assert isinstance(options, CycleGANOptions)
        return TanhGeneratorTranslator(cls.name, cls._generator(options), options)

    def weight_average(self) -> tuple[nn.Module, WeightAverage] | None:
        return None if self.G_A_ema is None else (self.G_A, self.G_A_ema)

    def translator(self) -> Translator:
        generator = self.G_A if self.G_A_ema is None else self.G_A_ema.average
        return TanhGeneratorTranslator(self.name, generator, self.options)

    @torch.enable_grad()
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        o = self.options
        real_A = self._batch(batch, "src") * 2 - 1
        real_B = self._batch(batch, "dst") * 2 - 1
        self.train()
        G, D = self._params(self.G_A, self.G_B), self._params(self.D_A, self.D_B)

        # generators: fool both discriminators, close both cycles, leave target-domain inputs unchanged
        self._requires_grad([self.D_A, self.D_B], False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        with self.autocast():
            fake_B = self.G_A(real_A)
            rec_A = self.G_B(fake_B)
            fake_A = self.G_B(real_B)
            rec_B = self.G_A(fake_A)
            loss_gan = self.gan_loss(self.D_B(fake_B), True, False) + self.gan_loss(self.D_A(fake_A), True, False)
            loss_cycle = l1_loss(rec_A, real_A) * o.lambda_A + l1_loss(rec_B, real_B) * o.lambda_B
            if o.lambda_identity > 0:
                loss_idt = (l1_loss(self.G_A(real_B), real_B) * o.lambda_B
                            + l1_loss(self.G_B(real_A), real_A) * o.lambda_A) * o.lambda_identity
            else:
                loss_idt = torch.zeros((), device=real_A.device)
            loss_G = loss_gan + loss_cycle + loss_idt
        self._step("G", loss_G, G)
        if self.G_A_ema is not None:
            self.G_A_ema.update(self.G_A)

        # discriminators: real vs (pooled) fake, each loss halved
        self._requires_grad([self.D_A, self.D_B], True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        pooled_A = self.pool_A.query(fake_A.detach())
        pooled_B = self.pool_B.query(fake_B.detach())
        with self.autocast():
            loss_D_A = 0.5 * (self.gan_loss(self.D_A(real_A), True) + self.gan_loss(self.D_A(pooled_A), False))
            loss_D_B = 0.5 * (self.gan_loss(self.D_B(real_B), True) + self.gan_loss(self.D_B(pooled_B), False))
        self._step("D", loss_D_A + loss_D_B, D)

        names = ("G_gan", "G_cycle", "G_idt", "G", "D_A", "D_B")
        values = torch.stack([loss_gan, loss_cycle, loss_idt, loss_G, loss_D_A, loss_D_B]).detach().float().tolist()
        return dict(zip(names, values, strict=True))  # one device sync for all six
