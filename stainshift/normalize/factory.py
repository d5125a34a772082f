"""``build(name, **options)``: the typed factory of the classical normalizers (torch-staintools style).

    >>> from stainshift.normalize import build, normalize_images
    >>> norm = build("macenko", background="auto").fit(clinic_images)   # list of HxWx3 uint8 arrays
    >>> out = norm(batch)                                                # (B, 3, H, W) float in [0, 1]
    >>> out_images = normalize_images(norm, hgtp_images)                 # any sizes, uint8 in and out
"""

from __future__ import annotations

from typing import Any, Literal, overload

from stainshift.errors import StainshiftError
from stainshift.models.kinds import Kind
from stainshift.models.registry import entry, names
from stainshift.normalize.base import Normalizer
from stainshift.normalize.histogram import HistogramNormalizer
from stainshift.normalize.macenko import MacenkoNormalizer
from stainshift.normalize.reinhard import ReinhardNormalizer

NORMALIZERS: tuple[str, ...] = names(Kind.CLASSICAL)  # the registry's classical methods


@overload
def build(name: Literal["reinhard"], **options: Any) -> ReinhardNormalizer: ...
@overload
def build(name: Literal["macenko"], **options: Any) -> MacenkoNormalizer: ...
@overload
def build(name: Literal["histogram"], **options: Any) -> HistogramNormalizer: ...
@overload
def build(name: str, **options: Any) -> Normalizer: ...


def build(name: str, **options: Any) -> Normalizer:
    """An unfitted normalizer called ``name`` (one of :data:`NORMALIZERS`), built with ``options``."""
    key = str(name).strip().lower()
    if key not in names(Kind.CLASSICAL):
        raise StainshiftError(f"unknown normalizer {name!r}; choose one of {', '.join(names(Kind.CLASSICAL))}")
    cls = entry(key).load()
    try:
        return cls(**options)
    except TypeError as exc:
        raise StainshiftError(f"{key}: {exc}".replace("__init__() ", "")) from None
