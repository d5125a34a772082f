"""A pixel-wise student of a learned harmonizer (StainNet, Kang et al. 2021): 1x1 convolutions only.

The network sees one pixel's colour at a time (3 -> 32 -> 32 -> 3 with ReLUs, 1,283 parameters), so it can recolour
an image but cannot draw, move or erase structure: two pixels of the same colour always come out the same. It is
trained with L1 to a teacher's outputs (the teacher is a kept epoch of a cyclegan / colorization / cut run, named by
``teacher``) on the source's train split, like any other model of the registry (``stainshift distill`` does that).

With ``condition="image-stats"`` the network also sees its image's colour mean and SD per channel (9 -> 32 -> 32 -> 3,
1,475 parameters): still one colour map within an image, so still no structure drawn, but a different map for each
image's colours, the way the teacher recolours each image differently (``benchmarks/results/distill_ceiling.md``).
Its statistics are the whole image's at inference and the training crop's in training.

For inference the network is baked into a 3-D colour lookup table (``lut_size``^3 colours, trilinear interpolation
through ``grid_sample``), and for 8-bit images that table can be expanded to every one of the 2^24 colours so a
pixel costs one gather. The tables are functions of the weights alone, rebuilt whenever they may have changed (a
mode switch or a weight load), so epoch files hold only the network.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from stainshift.errors import StainshiftError
from stainshift.losses import l1_loss
from stainshift.models.base import ModelOptions, TranslationModel, Translator

OPTIMIZERS = ("sgd", "adam")
CONDITIONS = ("none", "image-stats")  # what the network sees besides the pixel's colour
N_STATS = 6                           # image-stats: per-channel mean and SD


@dataclass(frozen=True, kw_only=True)
class DistilledOptions(ModelOptions):
    """Student options; the defaults are StainNet's (SGD 0.01, cosine schedule over 300 epochs, batch 10, 256 px)."""

    epochs: int = 300
    epochs_decay: int = 0
    lr: float = 0.01
    load_size: int = 256
    crop_size: int = 256
    batch_size: int = 10
    keep_epochs: tuple[int, ...] = (300,)
    teacher: str = ""              # the epoch file whose translations the student learns
    channels: int = 32             # hidden 1x1 channels
    layers: int = 3                # 1x1 convolutions (3: 3 -> 32 -> 32 -> 3)
    optimizer: str = "sgd"
    lut_size: int = 33             # colours per axis of the inference lookup table; 0 = run the network
    condition: str = "none"        # one of CONDITIONS

    def check(self) -> list[str]:
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.condition not in CONDITIONS:
            problems.append(f"condition {self.condition!r} is not one of {', '.join(CONDITIONS)}")
        if self.channels < 1 or self.layers < 2:
            problems.append("channels must be >= 1 and layers >= 2")
        if self.lut_size != 0 and not 2 <= self.lut_size <= 257:
            problems.append(f"lut_size must be 0 (no table) or 2..257 (got {self.lut_size})")
        return problems


def pixel_network(o: DistilledOptions) -> nn.Sequential:
    """1x1 convolutions with ReLUs between them: [-1, 1] RGB (and the image's statistics) in, [-1, 1] RGB out
    (unbounded)."""
    widths = [3 + (N_STATS if o.condition == "image-stats" else 0), *[o.channels] * (o.layers - 1), 3]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Conv2d(a, b, kernel_size=1))
        if i < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def image_stats(x: torch.Tensor) -> torch.Tensor:
    """Per image of a B x 3 x H x W [0, 1] batch: its channels' means and SDs (B x 6)."""
    flat = x.flatten(2)
    return torch.cat([flat.mean(2), flat.std(2, unbiased=False)], 1)


def network_inputs(x: torch.Tensor, condition: str, stats: torch.Tensor | None = None) -> torch.Tensor:
    """What the network reads for a B x 3 x H x W [0, 1] batch, in [-1, 1]: the colours, and with
    ``image-stats`` each image's statistics (``stats``, B x 6, default the batch images' own) at every pixel."""
    if condition == "none":
        return x * 2 - 1
    s = image_stats(x) if stats is None else stats
    return torch.cat([x, s[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1) * 2 - 1


def lut_grid(size: int) -> torch.Tensor:
    """Every colour of a ``size``^3 table as a 1 x 3 x size x size^2 image in [0, 1]; row-major (b, g, r)."""
    axis = torch.linspace(0, 1, size)
    b, g, r = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([r, g, b]).reshape(1, 3, size, size * size)


def apply_lut(lut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup: ``lut`` is 1 x 3 x S(b) x S(g) x S(r), ``x`` B x 3 x H x W in [0, 1]."""
    grid = (x * 2 - 1).permute(0, 2, 3, 1).unsqueeze(1)  # B x 1 x H x W x (r, g, b) = grid_sample's (x, y, z)
    out = F.grid_sample(lut.expand(x.shape[0], -1, -1, -1, -1).to(x.dtype), grid, mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out.squeeze(2)


class DistilledTranslator(Translator):
    """The student: the lookup table in eval mode (when ``lut_size`` > 0 and ``use_lut``), the network otherwise.
    A conditioned student has one table per image, built from that image's statistics."""

    pixelwise = True
    CHUNK = 1 << 20  # pixels per network call: bounded memory on large fields
    def __init__(self, model_name: str, network: nn.Sequential, options: DistilledOptions) -> None:
        super().__init__(model_name, options, multiple=1)
        self.network = network
        self.use_lut = options.lut_size > 0
        self._lut: torch.Tensor | None = None
        self._table_8bit: np.ndarray | None = None

    @property
    def conditioned(self) -> bool:
        return self.options.condition != "none"

    @property
    def image_statistics(self) -> bool:
        """Whether an image must be translated whole (not in tiles): the map depends on the whole image."""
        return self.conditioned

    def run_network(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        """The network on a B x 3 x H x W [0, 1] batch (``stats``: the images' statistics, default their own),
        a bounded number of pixels per call."""
        cond = self.options.condition
        s = image_stats(x) if stats is None and self.conditioned else stats
        flat = x.flatten(2)
        out = [self.network(network_inputs(flat[:, :, i:i + self.CHUNK, None], cond, s)).float()
               for i in range(0, flat.shape[2], self.CHUNK)]
        return torch.cat(out, 2).reshape(x.shape).add(1).div(2).clamp(0, 1)

    def lut(self, stats: torch.Tensor | None = None) -> torch.Tensor:
        """The lookup table of the current weights (built on first use after a weight load or mode switch); a
        conditioned student's is that of one image's ``stats`` (1 x 6), built on every call."""
        if self.conditioned and stats is None:
            raise StainshiftError("a conditioned student's colour table depends on the image: pass its statistics")
        if self._lut is None or self.conditioned:
            size = self.options.lut_size
            with torch.no_grad():
                colours = self.run_network(lut_grid(size).to(self.network[0].weight.device), stats)
            table = colours.reshape(1, 3, size, size, size)
            if self.conditioned:
                return table
            self._lut = table
        return self._lut

    def table_8bit(self) -> np.ndarray:
        """Every 8-bit colour's output (2^24 x 3 uint8, 48 MiB), interpolated from :meth:`lut`: for 8-bit images
        the trilinear lookup then becomes one gather per pixel (:meth:`translate_8bit`)."""
        if self.options.lut_size == 0:
            raise StainshiftError("this student has no colour table (lut_size 0); train it with --set lut_size=33")
        if self.conditioned:
            raise StainshiftError("a conditioned student (condition image-stats) has one colour table per image, "
                                  "so no single 8-bit table; translate with the student itself")
        if self._table_8bit is None:
            lut = self.lut()
            levels = torch.arange(256, dtype=torch.float32, device=lut.device) / 255
            rows = []
            with torch.no_grad():
                for r in levels:  # one red level at a time: 65,536 colours per call, bounded memory
                    g, b = torch.meshgrid(levels, levels, indexing="ij")
                    x = torch.stack([torch.full_like(g, r), g, b])[None]
                    rows.append((apply_lut(lut, x).clamp(0, 1)[0] * 255).round().to(torch.uint8).cpu())
            self._table_8bit = torch.stack(rows).permute(0, 2, 3, 1).reshape(-1, 3).numpy()
        return self._table_8bit

    def translate_8bit(self, image: np.ndarray) -> np.ndarray:
        """An H x W x 3 uint8 RGB image through the 8-bit table (what the colour table gives, rounded)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise StainshiftError(f"translate_8bit takes H x W x 3 uint8 images (got {image.dtype} {image.shape})")
        index = (image[..., 0].astype(np.int32) << 16) | (image[..., 1].astype(np.int32) << 8) | image[..., 2]
        return np.take(self.table_8bit(), index, axis=0)

    def translate_padded(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_lut and not self.training:
            if self.conditioned:
                stats = image_stats(x)
                return torch.cat([apply_lut(self.lut(stats[i:i + 1]), x[i:i + 1]) for i in range(len(x))]).clamp(0, 1)
            return apply_lut(self.lut(), x).clamp(0, 1)
        return self.run_network(x)

    def train(self, mode: bool = True) -> DistilledTranslator:
        self._lut = self._table_8bit = None  # weights may change in training mode, or were just loaded
        return super().train(mode)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self._lut = self._table_8bit = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _apply(self, fn: Any, recurse: bool = True) -> DistilledTranslator:
        self._lut = self._table_8bit = None  # .to(device / dtype)
        return super()._apply(fn, recurse)


def _cosine(total: int) -> Any:
    def factor(e: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(e, total) / total))

    return factor


class Distilled(TranslationModel):
    """Learns a teacher translator's mapping pixel by pixel; ``translator()`` is the student."""

    name = "distilled"
    options_type = DistilledOptions
    options: DistilledOptions
    teacher_option: ClassVar[str | None] = "teacher"
    file_options: ClassVar[tuple[str, ...]] = ("teacher",)

    def __init__(self, options: DistilledOptions) -> None:
        super().__init__(options)
        if not options.teacher:
            raise StainshiftError("distilled learns a trained harmonizer's outputs: run `stainshift distill --src S "
                                  "--dst D` (or pass the teacher's epoch file as the `teacher` option)")
        from stainshift.models.registry import load_translator

        self.student = pixel_network(options)
        # kept outside the module tree: never trained, never saved with the student, never switched to train mode
        object.__setattr__(self, "_teacher", load_translator(options.teacher).eval())
        params = list(self.student.parameters())
        o = options
        opt: torch.optim.Optimizer = (torch.optim.SGD(params, lr=o.lr) if o.optimizer == "sgd"
                                      else torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, 0.999)))
        self.optimizers["student"] = opt
        self.schedulers["student"] = LambdaLR(opt, _cosine(o.total_epochs))

    @classmethod
    def presets(cls) -> dict[str, ModelOptions]:
        return {
            # StainNet: SGD 0.01 without momentum, cosine over 300 epochs, batch 10 crops of 256 px
            "paper": DistilledOptions(),
            # 2 CPU cores: the teacher's forward pass is most of a step, so fewer, larger steps with Adam
            # (SGD 0.01 had not converged after 10 such epochs; benchmarks/results/distill.md)
            "cpu": DistilledOptions(epochs=10, epochs_decay=0, lr=2e-2, optimizer="adam", load_size=108,
                                    crop_size=96, batch_size=8, keep_epochs=(10,)),
            "tiny": DistilledOptions(epochs=2, epochs_decay=0, lr=5e-3, optimizer="adam", load_size=32,
                                     crop_size=32, batch_size=2, keep_epochs=(2,)),
        }

    def networks(self) -> dict[str, nn.Module]:
        return {"student": self.student}

    @classmethod
    def new_translator(cls, options: ModelOptions) -> Translator:
        assert isinstance(options, DistilledOptions)
        return DistilledTranslator(cls.name, pixel_network(options), options)

    def translator(self) -> Translator:
        return DistilledTranslator(self.name, self.student, self.options)

    @torch.enable_grad()
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x = self._batch(batch, "src")
        teacher: Translator = self._teacher  # type: ignore[attr-defined]
        teacher.to(x.device)
        with torch.no_grad():
            target = teacher(x).clamp(0, 1) * 2 - 1
        self.student.train()
        self.optimizers["student"].zero_grad(set_to_none=True)
        loss = l1_loss(self.student(network_inputs(x, self.options.condition)), target)
        self._step("student", loss, self._params(self.student))
        return {"L1": float(loss.detach())}
