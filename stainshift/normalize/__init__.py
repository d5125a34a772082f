"""Classical stain normalizers (Reinhard, Macenko, histogram matching) as fitted ``nn.Module`` objects.

``build(name, **options)`` returns a :class:`Normalizer`; ``fit(target_images)`` measures the target hospital,
``forward(batch)`` maps a (B, 3, H, W) batch in [0, 1] to its look; ``normalize_images`` handles lists of uint8
images of any sizes.
"""

from stainshift.normalize.base import DegenerateImageWarning, Normalizer, normalize_images
from stainshift.normalize.factory import NORMALIZERS, build
from stainshift.normalize.histogram import HistogramNormalizer
from stainshift.normalize.macenko import HE_STAIN_VECTORS, ROMANOWSKY_STAIN_VECTORS, MacenkoNormalizer
from stainshift.normalize.reinhard import ReinhardNormalizer

__all__ = [
    "HE_STAIN_VECTORS",
    "NORMALIZERS",
    "ROMANOWSKY_STAIN_VECTORS",
    "DegenerateImageWarning",
    "HistogramNormalizer",
    "MacenkoNormalizer",
    "Normalizer",
    "ReinhardNormalizer",
    "build",
    "normalize_images",
]
