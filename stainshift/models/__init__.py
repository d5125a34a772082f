"""Translation models (CycleGAN, ColorizationGAN) behind one interface; see :mod:`stainshift.models.base`."""

from stainshift.models.base import ModelOptions, TranslationModel, Translator
from stainshift.models.colorization import ColorizationGAN, ColorizationOptions
from stainshift.models.cyclegan import CycleGAN, CycleGANOptions
from stainshift.models.pool import ImagePool
from stainshift.models.registry import MODELS, build_model, model_options, options_from_dict

__all__ = [
    "MODELS",
    "ColorizationGAN",
    "ColorizationOptions",
    "CycleGAN",
    "CycleGANOptions",
    "ImagePool",
    "ModelOptions",
    "TranslationModel",
    "Translator",
    "build_model",
    "model_options",
    "options_from_dict",
]
