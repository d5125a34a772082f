"""CUT / FastCUT (Park et al., 2020): one generator, a patch-wise contrastive loss between input and output, no cycle.

Networks: ``G`` (src -> dst, CycleGAN's ResNet generator), ``D`` (PatchGAN on target images) and ``F`` (one small MLP
per encoder layer of ``G`` listed in ``nce_layers``, projecting sampled feature vectors to ``mlp_nc`` dimensions).
PatchNCE: the encoder features of the output ``G(x)`` at ``num_patches`` random positions must each be nearer (by
dot product of L2-normalized projections, temperature ``nce_T``) to the input's feature at the same position than
to the input's features elsewhere in the same image: the output's structure is tied to the input's by construction.
Objective: ``lambda_gan * GAN(D(G(x)))`` + ``lambda_nce`` * PatchNCE(x, G(x)), averaged with PatchNCE(y, G(y)) on
target images when ``nce_idt`` (CUT; FastCUT drops it, uses ``lambda_nce = 10`` and ``flip_equivariance``).
LSGAN, no image pool; the discriminator is updated before the generator, as in the reference code. The
reference's anti-aliased down/upsampling is not used (the same generator as CycleGAN's here); ``G`` and ``F``
share one Adam optimizer (the same learning rate and betas as the reference's two). Images are scaled to [-1, 1]
inside the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stainshift.losses import GAN_MODES, GANLoss
from stainshift.models.base import ModelOptions, TanhGeneratorTranslator, TranslationModel, Translator
from stainshift.nets.averaging import WeightAverage
from stainshift.nets.discriminators import PatchDiscriminator
from stainshift.nets.generators import NORMS, PADDINGS, UPSAMPLINGS, ResnetGenerator, init_weights


@dataclass(frozen=True, kw_only=True)
class CUTOptions(ModelOptions):
    """CUT options; the defaults are the reference's CUT mode (the ``paper`` preset)."""

    epochs: int = 200
    epochs_decay: int = 200
    ngf: int = 64
    n_blocks: int = 9
    ndf: int = 64
    n_layers_d: int = 3
    norm: str = "instance"
    padding: str = "reflect"
    gan_mode: str = "lsgan"
    lambda_gan: float = 1.0
    lambda_nce: float = 1.0          # FastCUT: 10
    nce_idt: bool = True             # PatchNCE on target images too (CUT); FastCUT: False
    nce_layers: tuple[int, ...] = (0, 4, 8, 12, 16)  # indices into G's layers (0: the padded input image)
    num_patches: int = 256
    nce_t: float = 0.07
    mlp_nc: int = 256
    flip_equivariance: bool = False  # FastCUT: half the steps translate the mirrored batch, PatchNCE mirrored back
    ema_decay: float = 0.0           # > 0: translate with an exponential moving average of G
    upsample: str = "transpose"

    def __post_init__(self) -> None:
        object.__setattr__(self, "nce_layers", tuple(int(i) for i in self.nce_layers))
        super().__post_init__()

    def check(self) -> list[str]:
        problems = []
        for name, valid in (("norm", NORMS), ("padding", PADDINGS), ("gan_mode", GAN_MODES),
                            ("upsample", UPSAMPLINGS)):
            if getattr(self, name) not in valid:
                problems.append(f"{name} {getattr(self, name)!r} is not one of {', '.join(valid)}")
        if self.padding != "reflect":
            problems.append("nce_layers index G's layers as laid out with padding 'reflect'; use that padding")
        last = encoder_layers(self.n_blocks) - 1
        if not self.nce_layers or min(self.nce_layers) < 0 or max(self.nce_layers) > last:
            problems.append(f"nce_layers {list(self.nce_layers)} must be encoder layers 0..{last} of a generator "
                            f"with {self.n_blocks} blocks")
        if min(self.ngf, self.ndf, self.n_layers_d, self.num_patches, self.mlp_nc) < 1 or self.n_blocks < 0:
            problems.append("ngf, ndf, n_layers_d, num_patches, mlp_nc must be >= 1 and n_blocks >= 0")
        if self.nce_t <= 0 or min(self.lambda_gan, self.lambda_nce) < 0:
            problems.append("nce_t must be > 0, lambda_gan and lambda_nce >= 0")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must be in [0, 1) (got {self.ema_decay})")
        multiple = 2**ResnetGenerator.n_down
        if self.crop_size % multiple:
            problems.append(f"crop_size {self.crop_size} must be a multiple of {multiple}")
        return problems


def encoder_layers(n_blocks: int) -> int:
    """Layers of a reflect-padded ResnetGenerator up to its last residual block: pad, conv, norm, ReLU, two
    (conv, norm, ReLU) downsamplings, then the blocks."""
    return 10 + n_blocks


def encode(generator: ResnetGenerator, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
    """The outputs of ``generator``'s layers ``layers`` for input ``x`` (the network runs only as far as needed)."""
    wanted, out = set(layers), {}
    for i, layer in enumerate(generator.model):
        x = layer(x)
        if i in wanted:
            out[i] = x
            if len(out) == len(wanted):
                break
    return [out[i] for i in layers]


class PatchProjector(nn.Module):
    """``F``: per NCE layer, sample feature vectors at positions and project them (Linear, ReLU, Linear, L2 norm)."""

    def __init__(self, channels: list[int], nc: int) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, nc), nn.ReLU(), nn.Linear(nc, nc)) for c in channels)
        init_weights(self)

    def forward(self, feats: list[torch.Tensor], num_patches: int, ids: list[torch.Tensor] | None = None
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Projected samples, B x P x nc per layer, and the positions drawn (reused for the other image)."""
        out, drawn = [], []
        for k, (feat, mlp) in enumerate(zip(feats, self.mlps, strict=True)):
            flat = feat.flatten(2).transpose(1, 2)  # B x HW x C
            pos = ids[k] if ids is not None else \
                torch.randperm(flat.shape[1], device=feat.device)[:min(num_patches, flat.shape[1])]
            out.append(F.normalize(mlp(flat[:, pos]), dim=-1))
            drawn.append(pos)
        return out, drawn


def patch_nce(query: torch.Tensor, key: torch.Tensor, t: float) -> torch.Tensor:
    """PatchNCE of B x P x C projections: each query's positive is the key at its position, its negatives the keys
    at the other positions of the same image; cross-entropy over (1 + P - 1) logits, mean over patches."""
    b, p, _ = query.shape
    positive = (query * key.detach()).sum(-1, keepdim=True)  # B x P x 1
    negative = torch.bmm(query, key.detach().transpose(1, 2))  # B x P x P
    negative = negative.masked_fill(torch.eye(p, dtype=torch.bool, device=query.device)[None], -10.0)
    logits = torch.cat([positive, negative], dim=2) / t
    return F.cross_entropy(logits.flatten(0, 1), torch.zeros(b * p, dtype=torch.long, device=query.device))


class CUT(TranslationModel):
    """Unpaired one-way translation src -> dst with a patch-wise contrastive loss."""

    name = "cut"
    options_type = CUTOptions
    options: CUTOptions

    @classmethod
    def presets(cls) -> dict[str, ModelOptions]:
        small = {"ngf": 32, "n_blocks": 6, "ndf": 64, "load_size": 108, "crop_size": 96, "batch_size": 1,
                 "epochs": 10, "epochs_decay": 0, "keep_epochs": (1, 2, 3, 4, 5, 7, 10),
                 "nce_layers": (0, 4, 8, 12, 14)}
        return {
            "paper": CUTOptions(),
            # the CycleGAN `cpu` preset's generator and crops, so the two compare at equal capacity
            "cpu": CUTOptions(**small),
            # FastCUT: no identity PatchNCE, a 10x PatchNCE weight (the reference's FastCUT mode)
            "fast-cpu": CUTOptions(**small, nce_idt=False, lambda_nce=10.0, flip_equivariance=True),
            "tiny": CUTOptions(ngf=4, n_blocks=1, ndf=4, load_size=32, crop_size=32, batch_size=1, epochs=2,
                               epochs_decay=0, keep_epochs=(1, 2), nce_layers=(0, 4, 8, 10), num_patches=16,
                               mlp_nc=8),
        }

    @staticmethod
    def _generator(o: CUTOptions) -> ResnetGenerator:
        return ResnetGenerator(3, 3, ngf=o.ngf, n_blocks=o.n_blocks, norm=o.norm, padding=o.padding,
                               upsample=o.upsample)

    def __init__(self, options: CUTOptions) -> None:
        super().__init__(options)
        o = options
        self.G = self._generator(o)
        self.D = PatchDiscriminator(3, ndf=o.ndf, n_layers=o.n_layers_d, norm=o.norm)
        with torch.no_grad():  # channel counts of the NCE layers (no random numbers drawn)
            channels = [f.shape[1] for f in encode(self.G, torch.zeros(1, 3, 32, 32), o.nce_layers)]
        self.F = PatchProjector(channels, o.mlp_nc)
        self.gan_loss = GANLoss(o.gan_mode)
        self.G_ema = WeightAverage(self.G, o.ema_decay) if o.ema_decay > 0 else None
        self._setup_optimizers({"G": self._params(self.G, self.F), "D": self._params(self.D)})

    def networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"G": self.G, "D": self.D, "F": self.F}
        if self.G_ema is not None:
            nets["G_ema"] = self.G_ema
        return nets

    @classmethod
    def new_translator(cls, options: ModelOptions) -> Translator:
        assert isinstance(options, CUTOptions)
        return TanhGeneratorTranslator(cls.name, cls._generator(options), options)

    def weight_average(self) -> tuple[nn.Module, WeightAverage] | None:
        return None if self.G_ema is None else (self.G, self.G_ema)

    def translator(self) -> Translator:
        return TanhGeneratorTranslator(self.name, self.G if self.G_ema is None else self.G_ema.average, self.options)

    def _nce(self, source: torch.Tensor, output: torch.Tensor, flipped: bool = False) -> torch.Tensor:
        """PatchNCE between ``source`` and its translation ``output`` (made from the mirrored source if
        ``flipped``: its features are mirrored back, so the same positions are compared)."""
        o = self.options
        keys, ids = self.F(encode(self.G, source, o.nce_layers), o.num_patches)
        feats = encode(self.G, output, o.nce_layers)
        if flipped:
            feats = [f.flip(3) for f in feats]
        queries, _ = self.F(feats, o.num_patches, ids)
        return torch.stack([patch_nce(q, k, o.nce_t) for q, k in zip(queries, keys, strict=True)]).mean()

    @torch.enable_grad()
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        o = self.options
        real_A = self._batch(batch, "src") * 2 - 1
        real_B = self._batch(batch, "dst") * 2 - 1
        self.train()
        n = real_A.shape[0]
        inputs = torch.cat([real_A, real_B]) if o.nce_idt else real_A
        flipped = o.flip_equivariance and bool(torch.rand(()) < 0.5)  # torch's RNG: the loop restores it on resume
        with self.autocast():
            fake = self.G(inputs.flip(3) if flipped else inputs)
        fake_B, idt_B = fake[:n], fake[n:]

        self._requires_grad([self.D], True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        with self.autocast():
            loss_D = 0.5 * (self.gan_loss(self.D(fake_B.detach()), False) + self.gan_loss(self.D(real_B), True))
        self._step("D", loss_D, self._params(self.D))

        self._requires_grad([self.D], False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        with self.autocast():
            loss_gan = self.gan_loss(self.D(fake_B), True, False) * o.lambda_gan
            loss_nce = self._nce(real_A, fake_B, flipped) * o.lambda_nce
            if o.nce_idt:
                loss_nce_y = self._nce(real_B, idt_B, flipped) * o.lambda_nce
                loss_nce_both = 0.5 * (loss_nce + loss_nce_y)
            else:
                loss_nce_y = torch.zeros((), device=real_A.device)
                loss_nce_both = loss_nce
            loss_G = loss_gan + loss_nce_both
        self._step("G", loss_G, self._params(self.G, self.F))
        if self.G_ema is not None:
            self.G_ema.update(self.G)
        values = torch.stack([loss_gan, loss_nce, loss_nce_y, loss_G, loss_D]).detach().float().tolist()
        return dict(zip(("G_gan", "NCE", "NCE_Y", "G", "D"), values, strict=True))
