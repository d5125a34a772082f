"""``domains inspect``: what a domain holds, how its colour and cell size look, and which files are unreadable."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from stainshift.data.domains import empty_classes, scan_domain
from stainshift.data.io import read_image
from stainshift.data.scale import estimate_domain_diameter
from stainshift.data.stats import lab_stats
from stainshift.errors import ImageReadError
from stainshift.project import Project


@dataclass
class DomainReport:
    """Everything ``domains inspect`` prints, as data."""

    name: str
    folder: str
    counts: dict[str, int]
    n_masks: int
    width_range: tuple[int, int]
    height_range: tuple[int, int]
    lab_mean: tuple[float, float, float]
    lab_std: tuple[float, float, float]
    diameter: dict
    declared_diameter: float | str | None
    unreadable: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [f"domain {self.name}: {self.folder}"]
        lines += [f"  {label:<14} {n:>6}" for label, n in self.counts.items()]
        lines += [f"  {label:<14} {0:>6}   EMPTY folder: left out of splits and training" for label in
                  self.empty_classes]
        lines.append(f"  {'total':<14} {sum(self.counts.values()):>6}   ({self.n_masks} with masks)")
        lines.append(f"  size           {self.width_range[0]}-{self.width_range[1]} x "
                     f"{self.height_range[0]}-{self.height_range[1]} px (w x h)")
        mean = ", ".join(f"{v:.1f}" for v in self.lab_mean)
        std = ", ".join(f"{v:.1f}" for v in self.lab_std)
        lines.append(f"  L*a*b* mean    ({mean})   std ({std})")
        d = self.diameter
        if d.get("median") is None:
            lines.append("  cell diameter  unknown (no cell found)")
        else:
            lines.append(f"  cell diameter  {d['median']:.1f} px median (p25 {d['p25']:.1f}, p75 {d['p75']:.1f}; "
                         f"{d['n']} images, from {d['source']})")
        if self.declared_diameter is not None:
            lines.append(f"  declared       cell_diameter = {self.declared_diameter}")
        if self.unreadable:
            lines.append(f"  unreadable     {len(self.unreadable)} file(s):")
            lines += [f"    {reason}" for reason in self.unreadable]
        else:
            lines.append("  unreadable     none")
        return "\n".join(lines)


def inspect_domain(project: Project, name: str, progress: bool = False, max_diameter_images: int = 200
                   ) -> DomainReport:
    """Read every image of domain ``name`` once and summarize it (unreadable files are listed, not raised)."""
    config = project.domain(name)
    samples = scan_domain(config)
    unreadable: list[str] = []
    widths: list[int] = []
    heights: list[int] = []

    def readable_images() -> Iterator[np.ndarray]:
        for sample in tqdm(samples, desc=f"inspecting {name}", unit="img", disable=not progress, leave=False):
            try:
                image = read_image(sample.path)
            except ImageReadError as exc:
                unreadable.append(str(exc))
                continue
            heights.append(image.shape[0])
            widths.append(image.shape[1])
            yield image

    colour = lab_stats(readable_images())
    return DomainReport(
        name=name,
        folder=str(config.folder),
        counts=dict(Counter(s.label for s in samples)),
        n_masks=sum(s.mask is not None for s in samples),
        width_range=(min(widths, default=0), max(widths, default=0)),
        height_range=(min(heights, default=0), max(heights, default=0)),
        lab_mean=tuple(float(v) for v in colour.mean),
        lab_std=tuple(float(v) for v in colour.std),
        diameter=estimate_domain_diameter(project, name, max_images=max_diameter_images),
        declared_diameter=config.cell_diameter,
        unreadable=unreadable,
        empty_classes=empty_classes(config),
    )
