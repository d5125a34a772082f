"""The contract every translation model follows, the options they share, and the inference-only :class:`Translator`.

A model is an ``nn.Module`` whose networks are plain attributes (``self.G_A``, ``self.D_B``...); it owns its
optimizers and learning-rate schedulers and performs one optimisation step of all its networks per
:meth:`TranslationModel.train_step`. The training loop (``stainshift.train``) only needs this interface:

    model = build_model("cyclegan", "cpu", epochs=5)      # stainshift.models.registry
    model.to(device)
    for epoch in ...:
        for batch in loader:                                # keys by model.data_regime: {"src", "dst"} RGB in [0, 1]
            losses = model.train_step(batch)                # {"G_gan": 0.9, "D_A": 0.2, ...}
        model.end_epoch()
        torch.save(model.translator().checkpoint(), ...)    # generator + model name + options
        torch.save(model.training_state(), ...)             # everything needed to resume exactly

Options are frozen dataclasses, one subclass per model with its own defaults (the paper's values); presets are
named instances of them. Nothing here reads a global options object. A model declares what its batches hold
(``data_regime``) and how ``select`` scores its epochs (``scoring``); see :mod:`stainshift.models` for adding one.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from stainshift.errors import StainshiftError
from stainshift.losses import l1_loss
from stainshift.models.kinds import DataRegime, EpochScoring
from stainshift.models.pool import ImagePool
from stainshift.nets.averaging import WeightAverage

CHECKPOINT_FORMAT = 1
TRAINING_STATE_FORMAT = 1


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Options every model has. Defaults are the paper's (CycleGAN, Zhu et al. 2017, as used by Pérez et al.)."""

    epochs: int = 100                # epochs at the initial learning rate
    epochs_decay: int = 100          # further epochs with the learning rate decaying linearly to 0
    lr: float = 2e-4                 # Adam, generators and discriminators alike
    beta1: float = 0.5
    load_size: int = 286             # the loop resizes to load_size, then random-crops crop_size
    crop_size: int = 256
    batch_size: int = 1
    keep_epochs: tuple[int, ...] = (10, 15, 20, 25, 200)   # epochs whose generator is kept as its own file

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists: accept both, store a sorted tuple without duplicates
        object.__setattr__(self, "keep_epochs", tuple(sorted({int(e) for e in self.keep_epochs})))
        problems = [f"{name} must be >= {low} (got {getattr(self, name)})"
                    for name, low in (("epochs", 0), ("epochs_decay", 0), ("batch_size", 1), ("crop_size", 1))
                    if getattr(self, name) < low]
        if self.epochs + self.epochs_decay < 1:
            problems.append("epochs + epochs_decay must be >= 1")
        if self.lr <= 0 or not 0 <= self.beta1 < 1:
            problems.append(f"lr must be > 0 and 0 <= beta1 < 1 (got {self.lr}, {self.beta1})")
        if self.load_size < self.crop_size:
            problems.append(f"load_size {self.load_size} must be >= crop_size {self.crop_size}")
        if any(e < 1 for e in self.keep_epochs):
            problems.append(f"keep_epochs must be >= 1 (got {list(self.keep_epochs)})")
        problems += self.check()
        if problems:
            raise StainshiftError(f"{type(self).__name__}: " + "; ".join(problems))

    def check(self) -> list[str]:
        """Model-specific validation: a list of problems (empty when the options are consistent)."""
        return []

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.epochs_decay


def side_padding(n: int, multiple: int, min_size: int) -> tuple[int, int]:
    """Padding (before, after) of a side of ``n`` px up to a multiple of ``multiple`` and at least ``min_size``.
    Written with positive floor division and ``sym_max`` so that it also traces with symbolic sizes (ONNX export:
    a negative floor division becomes a truncating Div there)."""
    total = torch.sym_max((n + multiple - 1) // multiple * multiple, min_size) - n
    return total // 2, total - total // 2


def check_keys(what: str, state: Any, keys: Iterable[str]) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise StainshiftError(f"{what} is not a dictionary (got {type(state).__name__})")
    missing = sorted(set(keys) - set(state))
    if missing:
        raise StainshiftError(f"{what} lacks {missing}")
    return state


class Translator(nn.Module):
    """Inference-only mapping: B x ``in_channels`` x H x W in, B x ``out_channels`` x H x W in [0, 1] out, same size.

    RGB inputs are floats in [0, 1] (3 channels); mask inputs are label maps (1 channel of integer ids).

    ``forward`` pads H and W (reflection) up to a multiple of ``multiple`` (and at least ``min_size``), runs the
    network and crops back, so any input size works. Subclasses implement :meth:`translate_padded`. The networks are
    shared with the model that made the translator: call ``.eval()`` before use (batch norm statistics, dropout off);
    the model's ``train_step`` switches them back to training mode. Gradient mode is left to the caller.
    """

    model_name: str
    options: ModelOptions
    pixelwise: bool = False   # each output pixel depends on its input pixel alone (so any scale gives the same map)
    reads_instances: bool = False  # mask models with ``translate_instances(labels, cell_ids)`` (pix2pixHD)
    multiple: int
    min_size: int
    in_channels: int
    out_channels: int

    def __init__(self, model_name: str, options: ModelOptions, multiple: int, min_size: int | None = None,
                 in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.model_name, self.options = model_name, options
        self.multiple = multiple
        self.min_size = max(min_size or multiple, multiple)
        self.in_channels, self.out_channels = in_channels, out_channels

    def translate_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Translate a batch whose sides are multiples of ``self.multiple``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise StainshiftError(f"a {self.model_name} translator takes Bx{self.in_channels}xHxW batches (got shape "
                                  f"{tuple(x.shape)})")
        h, w = x.shape[-2:]
        (top, bottom), (left, right) = (side_padding(n, self.multiple, self.min_size) for n in (h, w))
        if not (top or bottom or left or right):
            return self.translate_padded(x)
        mode = "reflect" if max(left, right) < w and max(top, bottom) < h else "replicate"
        y = self.translate_padded(F.pad(x, (left, right, top, bottom), mode=mode))
        return y[..., top: top + h, left: left + w]

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to rebuild this translator without its run: model name, options, weights (on CPU)."""
        weights = {k: v.detach().to("cpu", copy=True) for k, v in self.state_dict().items()}
        return {"model": self.model_name, "options": dataclasses.asdict(self.options), "translator": weights,
                "format": CHECKPOINT_FORMAT}


class TanhGeneratorTranslator(Translator):
    """A generator with a tanh output ([-1, 1] in and out) between the [0, 1] <-> [-1, 1] conversions."""

    def __init__(self, model_name: str, generator: nn.Module, options: ModelOptions) -> None:
        super().__init__(model_name, options, generator.multiple, generator.min_size)
        self.generator = generator

    def translate_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x * 2 - 1).float().add(1).div(2).clamp(0, 1)


def _linear_decay(epochs: int, epochs_decay: int) -> Callable[[int], float]:
    """LR factor after ``e`` completed epochs: 1 for the first ``epochs``, then linear towards 0 (reference rule)."""

    def factor(e: int) -> float:
        return max(0.0, 1.0 - max(0, e + 1 - epochs) / float(epochs_decay + 1))

    return factor


class TranslationModel(nn.Module):
    """Base class of the translation models. Subclasses set ``name`` and ``options_type``, build their networks in
    ``__init__`` and then call :meth:`_setup_optimizers`, and implement :meth:`presets`, :meth:`networks`,
    :meth:`train_step` and :meth:`new_translator`."""

    name: ClassVar[str]
    options_type: ClassVar[type[ModelOptions]]
    data_regime: ClassVar[DataRegime] = DataRegime.UNPAIRED   # what the trainer puts in a batch
    scoring: ClassVar[EpochScoring] = EpochScoring.TRANSLATION  # how `select` scores the kept epochs
    teacher_option: ClassVar[str | None] = None  # a student of another translator: the option naming its epoch file
    file_options: ClassVar[tuple[str, ...]] = ()  # options naming files: kept project-relative in a run's records

    def __init__(self, options: ModelOptions) -> None:
        super().__init__()
        if not isinstance(options, self.options_type):
            raise StainshiftError(f"{self.name} needs {self.options_type.__name__}, got {type(options).__name__}")
        self.options = options
        self.grad_sync: Callable[[Iterable[nn.Parameter]], None] = _no_sync
        self.amp_dtype: torch.dtype | None = None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, LambdaLR] = {}

    # -- to implement ----------------------------------------------------------------------------------------------
    @classmethod
    def presets(cls) -> dict[str, ModelOptions]:
        """Named option sets; at least ``paper`` and ``cpu``."""
        raise NotImplementedError

    def networks(self) -> dict[str, nn.Module]:
        """Every network of the model by its name (explicit, for saving and loading)."""
        raise NotImplementedError

    def pools(self) -> dict[str, ImagePool]:
        """The image pools by name (none by default)."""
        return {}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step of every network on a batch with the keys of ``data_regime``
        (:data:`stainshift.models.kinds.BATCH_KEYS`); returns the losses by name."""
        raise NotImplementedError

    @classmethod
    def new_translator(cls, options: ModelOptions) -> Translator:
        """A translator with freshly initialised weights for ``options`` (used to load checkpoints)."""
        raise NotImplementedError

    def translator(self) -> Translator:
        """The src -> dst translator, sharing its weights with this model."""
        raise NotImplementedError

    def weight_average(self) -> tuple[nn.Module, WeightAverage] | None:
        """(the live generator, its weight average) when the translator is an average (``ema_decay``), else None."""
        return None

    def load_initial(self, ckpt: dict[str, Any]) -> list[str]:
        """Start from another run's weights (``--init-from``): a training state (``last.pt``) loads every network
        of the same name, an epoch file loads the translator. Returns what was loaded. A weight average restarts
        from the loaded live generator. Models whose networks are built from another's (a local enhancer around a
        global generator) override this."""
        try:
            if "networks" in ckpt:
                mine = self.networks()
                shared = sorted(set(mine) & set(ckpt["networks"]))
                if not shared:
                    raise StainshiftError(f"--init-from holds networks {sorted(ckpt['networks'])}, none of this "
                                          f"{self.name}'s ({sorted(mine)})")
                for key in shared:
                    mine[key].load_state_dict(ckpt["networks"][key])
                loaded = shared
            else:
                self.translator().load_state_dict(ckpt["translator"])
                loaded = ["translator"]
        except (RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StainshiftError(f"--init-from weights do not fit this {self.name} ({first})") from None
        if (averaged := self.weight_average()) is not None:
            live, average = averaged
            if loaded == ["translator"]:  # the translator is the average: the live generator takes its weights
                live.load_state_dict(average.average.state_dict())
            average.reset(live)
        return loaded

    # -- shared machinery ------------------------------------------------------------------------------------------
    def _setup_optimizers(self, groups: dict[str, Iterable[nn.Parameter]]) -> None:
        """One Adam optimizer (lr, beta1, 0.999) and one linear-decay LambdaLR scheduler per parameter group."""
        o = self.options
        for key, params in groups.items():
            opt = torch.optim.Adam(list(params), lr=o.lr, betas=(o.beta1, 0.999))
            self.optimizers[key] = opt
            self.schedulers[key] = LambdaLR(opt, _linear_decay(o.epochs, o.epochs_decay))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def autocast(self) -> contextlib.AbstractContextManager:
        """torch.autocast with ``amp_dtype`` on the parameters' device, or a no-op when ``amp_dtype`` is None."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _step(self, key: str, loss: torch.Tensor, params: list[nn.Parameter]) -> None:
        """Zeroed gradients are expected; backward, ``grad_sync`` on ``params``, optimizer step."""
        loss.backward()
        self.grad_sync(params)
        self.optimizers[key].step()

    def _conditional_gan_step(self, cond: torch.Tensor, fake: torch.Tensor, real: torch.Tensor,
                              lambda_l1: float) -> dict[str, float]:
        """One step of a conditional GAN (pix2pix's objective): ``self.D`` judges (condition, image) pairs, then
        ``self.G`` (whose output ``fake`` is) learns to fool it while staying within L1 of ``real``."""
        self._requires_grad([self.D], True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        with self.autocast():
            loss_D_fake = self.gan_loss(self.D(torch.cat([cond, fake.detach().to(cond.dtype)], 1)), False)
            loss_D_real = self.gan_loss(self.D(torch.cat([cond, real], 1)), True)
            loss_D = 0.5 * (loss_D_fake + loss_D_real)
        self._step("D", loss_D, self._params(self.D))

        self._requires_grad([self.D], False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        with self.autocast():
            loss_gan = self.gan_loss(self.D(torch.cat([cond, fake.to(cond.dtype)], 1)), True, False)
            loss_l1 = l1_loss(fake, real) * lambda_l1
            loss_G = loss_gan + loss_l1
        self._step("G", loss_G, self._params(self.G))
        self._requires_grad([self.D], True)

        names = ("G_gan", "G_L1", "G", "D_real", "D_fake", "D")
        values = torch.stack([loss_gan, loss_l1, loss_G, loss_D_real, loss_D_fake, loss_D]).detach().float().tolist()
        return dict(zip(names, values, strict=True))

    @staticmethod
    def _requires_grad(nets: Iterable[nn.Module], flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad_(flag)

    def _batch(self, batch: dict[str, torch.Tensor], key: str, channels: int = 3) -> torch.Tensor:
        if key not in batch:
            raise StainshiftError(f"{self.name} train_step needs batch[{key!r}] (got keys {sorted(batch)})")
        x = batch[key]
        if x.ndim != 4 or x.shape[1] != channels:
            raise StainshiftError(f"batch[{key!r}] must be Bx{channels}xHxW (got shape {tuple(x.shape)})")
        return x.to(self.device, torch.float32)

    def end_epoch(self) -> None:
        """Advance every learning-rate schedule by one epoch."""
        for scheduler in self.schedulers.values():
            scheduler.step()

    def learning_rates(self) -> dict[str, float]:
        return {k: opt.param_groups[0]["lr"] for k, opt in self.optimizers.items()}

    def training_state(self) -> dict[str, Any]:
        """Networks, optimizers, schedulers and image pools, by name: enough to resume exactly (with torch's RNG)."""
        return {
            "format": TRAINING_STATE_FORMAT,
            "model": self.name,
            "options": dataclasses.asdict(self.options),
            "networks": {k: net.state_dict() for k, net in self.networks().items()},
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "pools": {k: pool.state_dict() for k, pool in self.pools().items()},
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state`'s output (the model must have been built with compatible options)."""
        check_keys(f"{self.name} training state", state, ("format", "model", "networks", "optimizers", "schedulers",
                                                             "pools"))
        if state["model"] != self.name:
            raise StainshiftError(f"training state is for a {state['model']!r} model, not {self.name!r}")
        parts: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            ("networks", self.networks(), state["networks"]),
            ("optimizers", self.optimizers, state["optimizers"]),
            ("schedulers", self.schedulers, state["schedulers"]),
            ("pools", self.pools(), state["pools"]),
        ]
        for kind, mine, saved in parts:
            if set(mine) != set(saved):
                raise StainshiftError(f"{self.name} training state has {kind} {sorted(saved)}, expected {sorted(mine)}")
        try:
            for _, mine, saved in parts:
                for key, obj in mine.items():
                    obj.load_state_dict(saved[key])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StainshiftError(f"{self.name} training state does not fit this model's options ({first})") from None

    @staticmethod
    def _params(*nets: nn.Module) -> list[nn.Parameter]:
        return [p for net in nets for p in net.parameters()]


def _no_sync(params: Iterable[nn.Parameter]) -> None:
    """Single-process training: nothing to synchronise."""
