"""What a model declares about itself, as enums that import nothing heavy (the CLI reads them to build ``--help``).

- :class:`Kind`: classical (fitted statistics) or learned (trained networks with kept epochs);
- :class:`Modality`: what a model consumes and produces (RGB images or mask label maps);
- :class:`DataRegime`: what one training batch holds, so the trainer can build the dataset;
- :class:`EpochScoring`: how ``stainshift select`` scores a run's kept epochs.
"""

from __future__ import annotations

from enum import Enum


class Kind(Enum):
    CLASSICAL = "classical"   # fitted on the target's images, no training run (Reinhard, Macenko, histogram)
    LEARNED = "learned"       # trained by `stainshift train`, kept epochs, selectable


class Modality(Enum):
    RGB = "rgb"               # B x 3 x H x W float in [0, 1]
    MASK = "mask"             # B x 1 x H x W float holding integer label ids (the mask file's values)


class DataRegime(Enum):
    """What the trainer feeds a model; the batch keys each regime carries are in :data:`BATCH_KEYS`."""

    UNPAIRED = "unpaired"         # source and target crops drawn independently; an epoch = the source's train split
    TARGET_ONLY = "target-only"   # target crops; an epoch = the target's train split (a source crop rides along)
    PAIRED_MASK = "paired-mask"   # a target image with its own mask, cropped alike (mask in, image out)
    UNPAIRED_MASK = "unpaired-mask"  # a source mask and a target image drawn independently (mask in, image out)
    CLASSES = "classes"           # labelled target images and their class indices
    CLASS_PAIR = "class-pair"     # two classes of one domain drawn independently (class-to-class translation)

    @property
    def needs_source(self) -> bool:
        """Whether training reads a source at all: another domain, or another class of the same domain (otherwise
        ``--src`` defaults to ``--dst``, and a run serves every source of its target)."""
        return self in (DataRegime.UNPAIRED, DataRegime.UNPAIRED_MASK, DataRegime.CLASS_PAIR)

    @property
    def masks_from_source(self) -> bool:
        """Whether the masks a model learns from are the source domain's (else the target's own)."""
        return self is DataRegime.UNPAIRED_MASK


BATCH_KEYS: dict[DataRegime, tuple[str, ...]] = {
    DataRegime.UNPAIRED: ("src", "dst"),
    DataRegime.TARGET_ONLY: ("src", "dst"),
    DataRegime.PAIRED_MASK: ("image", "mask"),
    DataRegime.UNPAIRED_MASK: ("image", "mask"),
    DataRegime.CLASSES: ("image", "label"),
    DataRegime.CLASS_PAIR: ("src", "dst"),
}


class EpochScoring(Enum):
    TRANSLATION = "translation"   # the source's validation images translated: classifier, SSIM to input, colour
    GENERATION = "generation"     # images generated from masks (no input image to compare with)
    MORPHOLOGY = "morphology"     # one class turned into another: what must change and what must not (rare.py)
