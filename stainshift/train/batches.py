"""What one training epoch feeds a model, built from the model's declared data regime.

Every random choice of an epoch (image order, target pairing, crops, flips) comes from a generator seeded by
(seed, epoch), so an epoch is the same after a resume and whatever the number of DataLoader workers.

| regime        | samples                                  | an epoch runs over | batch keys        |
|---------------|------------------------------------------|--------------------|-------------------|
| unpaired      | source train + target train              | the source         | src, dst          |
| target-only   | source train + target train              | the target         | src, dst (src ignored) |
| paired-mask   | target train images with their masks     | the target         | image, mask       |
| unpaired-mask | source train masks + target train images | the source         | image, mask       |
| classes       | target train images and their labels     | the target         | image, label      |
| class-pair    | one domain's train images of two classes | the "from" class   | src, dst          |

The class-pair regime draws one image of each class per step, so a rare "to" class with a handful of images is seen
as often as the common "from" class (class-balanced by construction; ``balanced`` changes nothing there).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from stainshift.data.datasets import LabelledCrops, PairedMaskCrops, UnpairedCrops, UnpairedMaskCrops
from stainshift.data.domains import Sample
from stainshift.data.io import image_size, read_mask
from stainshift.data.splits import samples_in
from stainshift.errors import DataError, StainshiftError
from stainshift.models.kinds import DataRegime
from stainshift.project import Project
from stainshift.synth.encoding import check_label_map

MASKS_CHECKED = 64  # masks read before training to catch a folder in the wrong coding (class ids, instance maps)


def class_weights(samples: Sequence[Sample], balanced: bool) -> torch.Tensor:
    """Sampling weights: uniform, or 1/count(class) so each class is drawn equally often."""
    if not balanced:
        return torch.ones(len(samples), dtype=torch.float64)
    counts = Counter(s.label for s in samples)
    return torch.tensor([1.0 / counts[s.label] for s in samples], dtype=torch.float64)


def _draw(weights: torch.Tensor, n: int, gen: torch.Generator, permute: bool) -> torch.Tensor:
    """``n`` indices: a permutation when ``permute`` and the weights are uniform, else weighted draws."""
    if permute and bool((weights == weights[0]).all()):
        return torch.randperm(n, generator=gen)
    return torch.multinomial(weights, n, replacement=True, generator=gen)


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def epoch_plan(src_weights: torch.Tensor, dst_weights: torch.Tensor, seed: int, epoch: int,
               over_target: bool = False) -> list[tuple[int, int, int]]:
    """The (source, target, augmentation seed) triples of one two-domain epoch.

    One item per source image (per target image for models that learn from the target alone); the other side is
    drawn at random. Class-balanced weights turn the permutation into weighted draws.
    """
    gen = _generator(seed, epoch)
    n = len(dst_weights) if over_target else len(src_weights)
    src = _draw(src_weights, n, gen, permute=not over_target)
    dst = _draw(dst_weights, n, gen, permute=over_target)
    aug = torch.randint(0, 2**31 - 1, (n,), generator=gen)
    return list(zip(src.tolist(), dst.tolist(), aug.tolist(), strict=True))


def single_plan(weights: torch.Tensor, seed: int, epoch: int) -> list[tuple[int, int]]:
    """The (sample, augmentation seed) pairs of a one-domain epoch: a permutation, or weighted draws."""
    gen = _generator(seed, epoch)
    order = _draw(weights, len(weights), gen, permute=True)
    aug = torch.randint(0, 2**31 - 1, (len(weights),), generator=gen)
    return list(zip(order.tolist(), aug.tolist(), strict=True))


@dataclass(frozen=True)
class TrainingSamples:
    """The training images a regime reads (``src`` is empty for one-domain regimes)."""

    regime: DataRegime
    src: list[Sample]
    dst: list[Sample]
    classes: tuple[str, ...] = ()  # the target's classes in label-index order (the classes regime)

    @property
    def counts(self) -> dict[str, int]:
        return {"src": len(self.src), "dst": len(self.dst)}


def class_pair_samples(project: Project, domain: str, classes: tuple[str, str] | None, split: str = "train"
                       ) -> tuple[list[Sample], list[Sample]]:
    """The images of the (from, to) classes of ``domain`` in ``split``, with one-line errors for a bad pair."""
    if classes is None:
        raise StainshiftError("this model turns one class of a domain into another: use `stainshift rare train "
                              "--domain D --from CLASS --to CLASS`")
    source, target = classes
    if source == target:
        raise StainshiftError(f"--from and --to are both '{source}': name two different classes of '{domain}'")
    every = samples_in(project, domain)
    known = sorted({s.label for s in every})
    for cls in classes:
        if cls not in known:
            raise StainshiftError(f"domain '{domain}' has no class '{cls}' (its classes: {', '.join(known)}); "
                                  "check the class folder name")
    for cls in classes:
        n = sum(s.label == cls for s in every)
        if n < 2:
            raise StainshiftError(f"class '{cls}' of '{domain}' has {n} image; a class translation needs at least "
                                  f"2 of each class: add images to its {cls}/ folder")
    picked = samples_in(project, domain, split)
    out = ([s for s in picked if s.label == source], [s for s in picked if s.label == target])
    for cls, found in zip(classes, out, strict=True):
        if not found:
            raise StainshiftError(f"class '{cls}' of '{domain}' has no image in its {split} split; enlarge the "
                                  f"{split} fraction (split = [train, val, test] in the project file)")
    return out


def training_samples(project: Project, regime: DataRegime, src: str, dst: str,
                     classes: tuple[str, str] | None = None) -> TrainingSamples:
    """The train splits that ``regime`` learns from, with one-line errors for what it lacks."""
    if regime is DataRegime.CLASS_PAIR:
        if src != dst:
            raise StainshiftError(f"a class translation stays inside one domain (got {src} and {dst})")
        source, target = class_pair_samples(project, src, classes)
        return TrainingSamples(regime, source, target, tuple(classes or ()))
    dst_train = samples_in(project, dst, "train")
    if not dst_train:
        raise StainshiftError(f"domain '{dst}' has no training images; check its folder and split")
    if regime in (DataRegime.UNPAIRED, DataRegime.TARGET_ONLY):
        src_train = samples_in(project, src, "train")
        if not src_train:
            raise StainshiftError(f"domain '{src}' has no training images; check its folder and split")
        return TrainingSamples(regime, src_train, dst_train)
    if regime is DataRegime.UNPAIRED_MASK:
        masks = [s for s in samples_in(project, src, "train") if s.mask is not None]
        if not masks:
            raise StainshiftError(f"domain '{src}' has no masks in its train split, which this model learns from; "
                                  f"name its masks folder with `masks = \"PATH\"` under [domains.{src}]")
        check_mask_coding(masks)
        return TrainingSamples(regime, masks, dst_train)
    if regime is DataRegime.PAIRED_MASK:
        with_masks = [s for s in dst_train if s.mask is not None]
        if not with_masks:
            raise StainshiftError(f"domain '{dst}' has no masks, which this model learns from; name its masks "
                                  f"folder with `masks = \"PATH\"` under [domains.{dst}] (same layout and stems)")
        check_mask_coding(with_masks)
        return TrainingSamples(regime, [], with_masks)
    classes = project.domain(dst).classes or tuple(sorted({s.label for s in dst_train}))
    return TrainingSamples(regime, [], dst_train, tuple(classes))


def check_mask_coding(samples: Sequence[Sample]) -> None:
    """Before any training: a one-line error when the masks are not value-coded (0 / 128 / 255), which the
    generators would silently read as all background, or not of their image's size. Up to :data:`MASKS_CHECKED`
    masks, evenly spaced over the list (:class:`PairedMaskCrops` checks every crop's size again)."""
    masks = list({str(s.mask): s for s in samples}.values())  # fields share one mask between their cells
    n = min(len(masks), MASKS_CHECKED)
    for sample in (masks[i * len(masks) // n] for i in range(n)):
        mask = read_mask(sample.mask)
        check_label_map(mask, sample.mask, "re-save the domain's masks as 8-bit grey PNGs (0 background, 128 "
                        "cytoplasm, 255 nucleus) or point its `masks =` at such a folder")
        w, h = image_size(sample.path)
        if mask.shape != (h, w):
            raise DataError(f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} px, its image {sample.path.name} "
                            f"{w}x{h}; masks must have their image's size (draw or resize them at the image's pixels)")


def epoch_dataset(data: TrainingSamples, seed: int, epoch: int, balanced: bool, crop: int,
                  scales: tuple[float, float], load_size: int | None, rank: int = 0, world: int = 1) -> Dataset:
    """This process's share of epoch ``epoch``. ``scales``: the (source, target) scale factors."""
    regime = data.regime
    if regime in (DataRegime.UNPAIRED, DataRegime.TARGET_ONLY, DataRegime.CLASS_PAIR):
        plan = epoch_plan(class_weights(data.src, balanced), class_weights(data.dst, balanced), seed, epoch,
                          over_target=regime is DataRegime.TARGET_ONLY)
        return UnpairedCrops(data.src, data.dst, plan[rank::world], crop, scales[0], scales[1], load_size)
    if regime is DataRegime.UNPAIRED_MASK:
        plan = epoch_plan(class_weights(data.src, balanced), class_weights(data.dst, balanced), seed, epoch)
        return UnpairedMaskCrops(data.src, data.dst, plan[rank::world], crop, scales[0], scales[1], load_size)
    plan2 = single_plan(class_weights(data.dst, balanced), seed, epoch)[rank::world]
    if regime is DataRegime.PAIRED_MASK:
        return PairedMaskCrops(data.dst, plan2, crop, scales[1], load_size)
    return LabelledCrops(data.dst, data.classes, plan2, crop, scales[1], load_size)


def fixed_samples(samples: Sequence[Sample], n: int) -> list[Sample]:
    """``n`` images, one class after another, always the same ones for the same split."""
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    picked: list[Sample] = []
    while len(picked) < min(n, len(samples)):
        for group in by_class.values():
            if group and len(picked) < n:
                picked.append(group.pop(0))
    return picked
