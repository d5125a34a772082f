"""Learned harmonization models behind one interface (:mod:`stainshift.models.base`) and one table
(:mod:`stainshift.models.registry`).

Adding a model
--------------
A new model is one file. In ``stainshift/models/mymodel.py``:

1. a frozen options dataclass subclassing :class:`~stainshift.models.base.ModelOptions` (defaults = the paper's);
2. a :class:`~stainshift.models.base.Translator` subclass: ``translate_padded`` maps a padded batch of what the
   model consumes (B x ``in_channels`` x H x W) to B x ``out_channels`` x H x W in [0, 1];
3. a :class:`~stainshift.models.base.TranslationModel` subclass with ``name``, ``options_type``, ``data_regime``
   (what a training batch holds: :class:`~stainshift.models.kinds.DataRegime`), ``scoring`` (how ``select``
   scores its epochs: :class:`~stainshift.models.kinds.EpochScoring`), ``presets()`` with at least ``paper``,
   ``cpu`` and ``tiny`` (the tests' size), ``networks()``, ``train_step(batch)``, ``new_translator(options)`` and
   ``translator()``. Optimizers come from ``_setup_optimizers``; ``pools()`` and ``load_initial`` (``--init-from``)
   have defaults.

Then one line in the table of :mod:`stainshift.models.registry` (or ``register("mymodel",
"stainshift.models.mymodel:MyModel")`` from outside the package). Nothing else changes: ``stainshift train
mymodel`` builds the dataset from ``data_regime``, checkpoints, resumes exactly and tracks; ``select``,
``harmonize`` and ``benchmark`` list it when it consumes and produces RGB images; ``tests/test_model_contract.py``
trains, resumes, reloads and runs every registered model at its ``tiny`` preset.

Names resolve lazily: importing this package does not import torch.
"""

from __future__ import annotations

import importlib

_API = {
    "ModelOptions": "stainshift.models.base",
    "TranslationModel": "stainshift.models.base",
    "Translator": "stainshift.models.base",
    "ImagePool": "stainshift.models.pool",
    "CycleGAN": "stainshift.models.cyclegan",
    "CycleGANOptions": "stainshift.models.cyclegan",
    "ColorizationGAN": "stainshift.models.colorization",
    "ColorizationOptions": "stainshift.models.colorization",
    "Pix2Pix": "stainshift.models.pix2pix",
    "Pix2PixOptions": "stainshift.models.pix2pix",
    "Pix2PixHD": "stainshift.models.pix2pixhd",
    "Pix2PixHDOptions": "stainshift.models.pix2pixhd",
    "MaskCycleGAN": "stainshift.models.mask_cyclegan",
    "MaskCycleGANOptions": "stainshift.models.mask_cyclegan",
    "DataRegime": "stainshift.models.kinds",
    "EpochScoring": "stainshift.models.kinds",
    "Kind": "stainshift.models.kinds",
    "Modality": "stainshift.models.kinds",
    "build_model": "stainshift.models.registry",
    "load_translator": "stainshift.models.registry",
    "model_class": "stainshift.models.registry",
    "model_options": "stainshift.models.registry",
    "options_from_dict": "stainshift.models.registry",
    "register": "stainshift.models.registry",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'stainshift.models' has no attribute {name!r}")
