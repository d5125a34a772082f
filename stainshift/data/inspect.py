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

FIELD_PROBE_IMAGES = 24
# A domain looks like whole fields when its located cells are small or off-centre. Calibrated on the shared sites
# (benchmarks/results/fields.md): ready-made crops put the cell within 0.04 of the shorter side of the centre and
# span 0.36-0.69 of it (medians); bccd's whole fields put it 0.26 away.
FIELD_RATIO = 0.2
FIELD_OFFSET = 0.12


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
    fields: bool = False
    cells_per_field: dict[str, int] | None = None  # fields domains: how many fields hold 0, 1, 2, 3+ cells
    cell_sources: dict[str, int] | None = None  # fields domains: fields whose cells came from a mask / the locator
    cell_to_image: float | None = None  # other domains: located cell diameter / shorter image side (median)
    cell_offset: float | None = None  # other domains: located cell's distance from the image centre / shorter side
    hint: str | None = None

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
        if self.cells_per_field is not None:
            per = ", ".join(f"{k}: {v}" for k, v in self.cells_per_field.items())
            sources = ", ".join(f"{v} from {k}" for k, v in (self.cell_sources or {}).items())
            lines.append(f"  cells/field    {per} fields ({sources}); the largest cell of each field is its labelled "
                         "one" + (", fields with none keep their centre" if self.cells_per_field.get("0") else ""))
        if self.cell_to_image is not None:
            lines.append(f"  framing        cell diameter {self.cell_to_image:.2f}, its offset from the centre "
                         f"{self.cell_offset:.2f} of the shorter side (medians of {FIELD_PROBE_IMAGES} located cells)")
        if self.hint:
            lines.append(f"  HINT           {self.hint}")
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
    extra: dict = {"fields": config.fields}
    if config.fields:
        from stainshift.data.fields import cells_per_field, field_cells

        cells = field_cells(project, name, samples, progress)
        extra["cells_per_field"] = cells_per_field(cells)
        extra["cell_sources"] = dict(Counter(c.source for c in cells.values()))
    else:
        framing = probe_framing(samples, seed=project.seed)
        if framing is not None:
            ratio, offset = extra["cell_to_image"], extra["cell_offset"] = framing
            if ratio < FIELD_RATIO or offset > FIELD_OFFSET:
                why = (f"cells lie {offset:.0%} of the shorter side from the centre" if offset > FIELD_OFFSET
                       else f"cells span only {ratio:.0%} of the shorter side")
                extra["hint"] = (f"{why}: these look like whole smear fields; add `fields = true` under "
                                 f"[domains.{name}] in {project.file} so each white cell is located and framed")
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
        **extra,
    )


def probe_framing(samples, n: int = FIELD_PROBE_IMAGES, seed: int = 0) -> tuple[float, float] | None:
    """How ``n`` images (a seeded draw) frame their largest located cell: the medians of its diameter and of its
    centre's distance from the image centre, both over the image's shorter side; None when no cell is located."""
    from stainshift.data.locate import locate_cells

    order = np.random.default_rng(seed).permutation(len(samples))[:n]
    ratios, offsets = [], []
    for i in sorted(order):
        try:
            image = read_image(samples[i].path)
        except ImageReadError:
            continue
        cells = locate_cells(image)
        if cells:
            h, w = image.shape[:2]
            cx, cy = cells[0].centre
            ratios.append((cells[0].w + cells[0].h) / 2.0 / min(h, w))
            offsets.append(float(np.hypot(cx - w / 2, cy - h / 2)) / min(h, w))
    return (float(np.median(ratios)), float(np.median(offsets))) if ratios else None
