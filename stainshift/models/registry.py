"""The one registry of translation models, their presets and option overrides.

    >>> model = build_model("cyclegan", "cpu", epochs=5)
    >>> model_options("colorization", "paper").crop_size
    256
"""

from __future__ import annotations

import dataclasses
from typing import Any

from stainshift.errors import StainshiftError
from stainshift.models.base import ModelOptions, TranslationModel
from stainshift.models.colorization import ColorizationGAN
from stainshift.models.cyclegan import CycleGAN

MODELS: dict[str, type[TranslationModel]] = {"cyclegan": CycleGAN, "colorization": ColorizationGAN}


def _model(name: str) -> type[TranslationModel]:
    if name not in MODELS:
        raise StainshiftError(f"unknown model {name!r} (valid: {', '.join(sorted(MODELS))})")
    return MODELS[name]


def _fields(options_type: type[ModelOptions]) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(options_type)}


def _coerce(options_type: type[ModelOptions], values: dict[str, Any], name: str) -> dict[str, Any]:
    """Reject unknown fields (one line listing the valid ones); lists become tuples, ints become floats."""
    fields = _fields(options_type)
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
    model = _model(name)
    presets = model.presets()
    if preset not in presets:
        raise StainshiftError(f"unknown preset {preset!r} for {name} (valid: {', '.join(sorted(presets))})")
    return dataclasses.replace(presets[preset], **_coerce(model.options_type, overrides, name))


def options_from_dict(name: str, values: dict[str, Any]) -> ModelOptions:
    """Options of model ``name`` from ``dataclasses.asdict`` output (e.g. a checkpoint's); absent fields default."""
    model = _model(name)
    if not isinstance(values, dict):
        raise StainshiftError(f"{name} options must be a dictionary (got {type(values).__name__})")
    try:
        return model.options_type(**_coerce(model.options_type, values, name))
    except TypeError as exc:
        raise StainshiftError(f"invalid {name} options ({exc})") from None


def build_model(name: str, preset: str = "cpu", **overrides: Any) -> TranslationModel:
    """A freshly initialised model (weights from torch's global RNG) with the preset's options and ``overrides``."""
    return _model(name)(model_options(name, preset, **overrides))
