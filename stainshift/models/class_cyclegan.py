"""A CycleGAN between two classes of one domain (the core paper's third block: normal lymphocytes <-> abnormal
ones and blasts, within the Clinic's images), to make images of a class that is rare in practice.

The networks and objective are CycleGAN's (:mod:`stainshift.models.cyclegan`); only the data differ: a batch holds
an image of the "from" class as ``src`` and one of the "to" class as ``dst``, both from the same domain
(``DataRegime.CLASS_PAIR``), so the stain stays and the cell's look changes. ``G_A`` (from -> to) is the
translator. Kept epochs are scored by what must change (nucleus-to-cytoplasm ratio, nucleus texture and colour)
and what must not (cell size and outline): :mod:`stainshift.rare`.
"""

from __future__ import annotations

from stainshift.models.base import ModelOptions
from stainshift.models.cyclegan import CycleGAN, CycleGANOptions
from stainshift.models.kinds import DataRegime, EpochScoring


class ClassCycleGAN(CycleGAN):
    """CycleGAN from one class of a domain to another; ``stainshift rare train`` runs it."""

    name = "classcyclegan"
    data_regime = DataRegime.CLASS_PAIR
    scoring = EpochScoring.MORPHOLOGY

    @classmethod
    def presets(cls) -> dict[str, ModelOptions]:
        cyclegan = CycleGAN.presets()
        return {
            # the paper: the reference settings for 200 epochs, generators compared at 10, 15, 20, 25 and 200
            "paper": cyclegan["paper"],
            # 2 CPU cores: the cyclegan cpu networks; an epoch runs over the "from" class
            "cpu": CycleGANOptions(ngf=32, n_blocks=6, ndf=64, load_size=108, crop_size=96, epochs=8,
                                   epochs_decay=4, keep_epochs=(2, 4, 6, 8, 10, 12)),
            # small cells (e.g. PBC at 72 px): the demo networks, ~12x cheaper per iteration than cpu
            "small": CycleGANOptions(ngf=16, n_blocks=3, ndf=32, load_size=72, crop_size=64, epochs=8,
                                     epochs_decay=4, lr=2e-4, keep_epochs=(2, 4, 6, 8, 10, 12)),
            "tiny": cyclegan["tiny"],
        }
