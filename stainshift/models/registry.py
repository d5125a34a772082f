"""The one table of harmonization methods: name -> ``"module:Class"``, kind, what it consumes and produces.

Nothing is imported until a method is used, so the CLI builds every ``choices=`` list (and ``--help``) from this
table without loading torch, and no model module imports this one: a model is a class in its own file, and one
line here (or one :func:`register` call, e.g. from a plugin or a test) makes it trainable, selectable,
harmonizable and part of ``benchmark``.

    >>> names(Kind.LEARNED)
    ('cyclegan', 'colorization', 'cut')
    >>> model = build_model("cyclegan", "cpu", epochs=5)
    >>> translator = load_translator("runs/hgtp_to_clinic/cyclegan/cpu-s0/epochs/epoch_003.pt")
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stainshift.errors import StainshiftError
from stainshift.models.kinds import Kind, Modality

if TYPE_CHECKING:
    from stainshift.models.base import ModelOptions, TranslationModel, Translator


@dataclass(frozen=True)
class Entry:
    """One registered method."""

    name: str
    target: str                         # "package.module:Class"
    kind: Kind
    consumes: Modality = Modality.RGB
    produces: Modality = Modality.RGB
    summary: str = ""
    between_classes: bool = False       # turns one class of a domain into another (`stainshift rare`), not a stain

    @property
    def translates_images(self) -> bool:
        """RGB in, RGB out, one domain's stain to another's: usable by ``harmonize``, ``select`` and ``benchmark``."""
        return self.consumes is Modality.RGB and self.produces is Modality.RGB and not self.between_classes

    def load(self) -> type:
        """The class, imported on first use."""
        if self.name in _LOADED:
            return _LOADED[self.name]
        module, _, attr = self.target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise StainshiftError(f"method {self.name!r} points at {self.target!r}, which cannot be imported ({exc})"
                                  ) from None
        if self.kind is Kind.LEARNED and getattr(cls, "name", None) != self.name:
            raise StainshiftError(f"method {self.name!r}: {self.target} calls itself {getattr(cls, 'name', None)!r}; "
                                  "register it under its own name")
        _LOADED[self.name] = cls
        return cls


_TABLE: dict[str, Entry] = {}
_LOADED: dict[str, type] = {}


def register(name: str, target: str | type, kind: Kind = Kind.LEARNED, consumes: Modality = Modality.RGB,
             produces: Modality = Modality.RGB, summary: str = "", replace: bool = False,
             between_classes: bool = False) -> Entry:
    """Add a method: ``target`` is ``"module:Class"`` (imported lazily) or the class itself."""
    if name in _TABLE and not replace:
        raise StainshiftError(f"method {name!r} is already registered (as {_TABLE[name].target})")
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise StainshiftError(f"method name {name!r}: use letters, digits, '-' and '_'")
    _LOADED.pop(name, None)
    if isinstance(target, type):
        if kind is Kind.LEARNED and getattr(target, "name", None) != name:
            raise StainshiftError(f"method {name!r}: {target.__qualname__} calls itself "
                                  f"{getattr(target, 'name', None)!r}; register it under its own name")
        _LOADED[name] = target
        target = f"{target.__module__}:{target.__qualname__}"
    elif ":" not in target:
        raise StainshiftError(f"method {name!r}: target {target!r} must read 'package.module:Class'")
    entry = Entry(name, target, kind, consumes, produces, summary, between_classes)
    _TABLE[name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a method (tests register toy models and take them out again)."""
    _TABLE.pop(name, None)
    _LOADED.pop(name, None)


for _args in (
    ("reinhard", "stainshift.normalize.reinhard:ReinhardNormalizer", Kind.CLASSICAL,
     "L*a*b* mean and standard deviation matched to the target"),
    ("macenko", "stainshift.normalize.macenko:MacenkoNormalizer", Kind.CLASSICAL,
     "stain vectors and concentrations matched to the target"),
    ("histogram", "stainshift.normalize.histogram:HistogramNormalizer", Kind.CLASSICAL,
     "per-channel L*a*b* histogram matching"),
    ("cyclegan", "stainshift.models.cyclegan:CycleGAN", Kind.LEARNED,
     "unpaired CycleGAN source <-> target"),
    ("colorization", "stainshift.models.colorization:ColorizationGAN", Kind.LEARNED,
     "pix2pix lightness -> chroma, trained on the target alone"),
    ("cut", "stainshift.models.cut:CUT", Kind.LEARNED,
     "contrastive unpaired translation (CUT / FastCUT): one generator, patch-wise contrastive loss"),
    ("distilled", "stainshift.models.distilled:Distilled", Kind.LEARNED,
     "pixel-wise student (1x1 convolutions, then a 3-D colour table) of a learned harmonizer: `stainshift distill`"),
):
    register(_args[0], _args[1], _args[2], summary=_args[3])
for _args in (
    ("pix2pix", "stainshift.models.pix2pix:Pix2Pix", "mask -> image pix2pix: U-Net, PatchGAN or global D, L1"),
    ("pix2pixhd", "stainshift.models.pix2pixhd:Pix2PixHD",
     "mask -> image pix2pixHD: global generator (+ local enhancer), multi-scale D, feature matching, styles"),
    ("maskcyclegan", "stainshift.models.mask_cyclegan:MaskCycleGAN",
     "unpaired mask -> image CycleGAN: source masks, target images, no pairs needed"),
):
    register(_args[0], _args[1], Kind.LEARNED, consumes=Modality.MASK, summary=_args[2])
register("classcyclegan", "stainshift.models.class_cyclegan:ClassCycleGAN", Kind.LEARNED, between_classes=True,
         summary="CycleGAN between two classes of one domain (e.g. lymphocyte -> blast): rare-class images")


def entry(name: str) -> Entry:
    if name not in _TABLE:
        raise StainshiftError(f"unknown method {name!r} (valid: {', '.join(_TABLE)})")
    return _TABLE[name]


def names(kind: Kind | None = None, images_only: bool = False) -> tuple[str, ...]:
    """Registered method names in table order, optionally of one kind / only those that translate RGB images."""
    return tuple(e.name for e in _TABLE.values()
                 if (kind is None or e.kind is kind) and (not images_only or e.translates_images))


def entries(kind: Kind | None = None, images_only: bool = False) -> list[Entry]:
    return [entry(n) for n in names(kind, images_only)]


def model_class(name: str) -> type[TranslationModel]:
    """The class of learned model ``name``."""
    found = entry(name)
    if found.kind is not Kind.LEARNED:
        raise StainshiftError(f"{name} is a classical method: it is fitted, not trained "
                              f"(learned: {', '.join(names(Kind.LEARNED))})")
    return found.load()


# -- options and models -------------------------------------------------------------------------------------------
def _coerce(options_type: type, values: dict[str, Any], name: str) -> dict[str, Any]:
    """Reject unknown fields (one line listing the valid ones); lists become tuples, ints become floats."""
    fields = {f.name: f for f in dataclasses.fields(options_type)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise StainshiftError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for {name} "
                              f"(valid: {', '.join(sorted(fields))})")
    out = {}
    for key, value in values.items():
        annotation = str(fields[key].type)
        if isinstance(value, list):
            value = tuple(value)
        elif annotation == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


def model_options(name: str, preset: str = "cpu", **overrides: Any) -> ModelOptions:
    """The options of ``preset`` for model ``name`` with ``overrides`` replacing fields."""
    model = model_class(name)
    presets = model.presets()
    if preset not in presets:
        raise StainshiftError(f"unknown preset {preset!r} for {name} (valid: {', '.join(sorted(presets))})")
    return dataclasses.replace(presets[preset], **_coerce(model.options_type, overrides, name))


def options_from_dict(name: str, values: dict[str, Any]) -> ModelOptions:
    """Options of model ``name`` from ``dataclasses.asdict`` output (e.g. a checkpoint's); absent fields default."""
    model = model_class(name)
    if not isinstance(values, dict):
        raise StainshiftError(f"{name} options must be a dictionary (got {type(values).__name__})")
    try:
        return model.options_type(**_coerce(model.options_type, values, name))
    except TypeError as exc:
        raise StainshiftError(f"invalid {name} options ({exc})") from None


def build_model(name: str, preset: str = "cpu", **overrides: Any) -> TranslationModel:
    """A freshly initialised model (weights from torch's global RNG) with the preset's options and ``overrides``."""
    return model_class(name)(model_options(name, preset, **overrides))


# -- checkpoints --------------------------------------------------------------------------------------------------
def translator_from_checkpoint(ckpt: dict[str, Any]) -> Translator:
    """Rebuild a translator (in eval mode, on CPU) from ``Translator.checkpoint()``'s dictionary."""
    from stainshift.models.base import CHECKPOINT_FORMAT, check_keys

    check_keys("translator checkpoint", ckpt, ("model", "options", "translator", "format"))
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise StainshiftError(f"translator checkpoint has format {ckpt['format']!r}; this version reads "
                              f"format {CHECKPOINT_FORMAT}")
    name = ckpt["model"]
    if name not in _TABLE or _TABLE[name].kind is not Kind.LEARNED:
        raise StainshiftError(f"translator checkpoint names an unknown model {name!r} "
                              f"(valid: {', '.join(names(Kind.LEARNED))})")
    translator = model_class(name).new_translator(options_from_dict(name, ckpt["options"]))
    try:
        translator.load_state_dict(ckpt["translator"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StainshiftError(f"translator checkpoint weights do not fit a {name} with its options ({first})"
                              ) from None
    return translator.eval()


def load_epoch(path: str | Path) -> tuple[Translator, dict[str, Any]]:
    """An epoch file's translator and its metadata (model, options, epoch, run, src, dst, preprocessing)."""
    from stainshift.train import checkpoints

    ckpt = checkpoints.load(path, "epoch checkpoint", "train again or pick another --epoch", weights_only=True)
    return translator_from_checkpoint(ckpt), {k: v for k, v in ckpt.items() if k != "translator"}


def load_translator(path: str | Path) -> Translator:
    """Rebuild a learned translator from an epoch file (which carries its model name and options)."""
    return load_epoch(path)[0]
