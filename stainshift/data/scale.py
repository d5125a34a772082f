"""Scale harmonization: rescale every domain so its cells span the project's common diameter in pixels.

Sites image cells at very different sizes (a white cell spans ~36% of a PBC crop but ~52% of a jtsc_tecom crop), and
a classifier or GAN sees that as a domain difference as large as colour. Each domain declares ``cell_diameter`` in
pixels (or ``"auto"``: estimated from its masks, else from a threshold segmentation, and cached under
``runs/scale/<domain>.json``; whole-field domains measure their located cells); the project's ``cell_diameter`` is
the common target. With both set, datasets resize
each image by ``target / domain`` before cropping; with either missing, images keep their size.
"""

from __future__ import annotations

import json

from stainshift.atomic import atomic_write_text
from stainshift.data.domains import scan_domain
from stainshift.data.stats import domain_cell_diameter
from stainshift.errors import DataError
from stainshift.project import Project
from stainshift.runs import scale_cache


def estimate_domain_diameter(project: Project, name: str, max_images: int = 200) -> dict:
    """Estimate the median cell diameter (px) of domain ``name``; masks are used when the domain has them, and the
    located cells when it holds whole fields."""
    samples = scan_domain(project.domain(name))
    if project.domain(name).fields:
        from stainshift.data.fields import field_cells, located_diameter

        return {"domain": name, **located_diameter(field_cells(project, name, samples))}
    with_masks = [s for s in samples if s.mask is not None]
    if with_masks:
        estimate = domain_cell_diameter([s.path for s in with_masks], [s.mask for s in with_masks],
                                        max_images=max_images, seed=project.seed)
    else:
        estimate = domain_cell_diameter([s.path for s in samples], None, max_images=max_images, seed=project.seed)
    return {"domain": name, "median": estimate.median, "p25": estimate.p25, "p75": estimate.p75,
            "n": estimate.n, "source": estimate.source}


def domain_diameter(project: Project, name: str) -> float | None:
    """The domain's cell diameter in px: declared, cached auto estimate, fresh auto estimate, or None (fields
    domains are always estimated when not declared: their framing needs it)."""
    declared = project.domain(name).cell_diameter
    if isinstance(declared, float) or (declared is None and not project.domain(name).fields):
        return declared
    cache = scale_cache(project, name)
    if cache.exists():
        cached = json.loads(cache.read_text())
        # an estimate made before the domain was declared whole fields measured the fields, not their cells
        if not project.domain(name).fields or str(cached.get("source", "")).startswith("cells located"):
            return float(cached["median"])
    estimate = estimate_domain_diameter(project, name)
    if estimate["median"] is None:
        raise DataError(f"domain '{name}': could not estimate a cell diameter from its images; set "
                        f"cell_diameter = <px> under [domains.{name}] in {project.file}")
    atomic_write_text(cache, json.dumps(estimate, indent=2))
    return float(estimate["median"])


def scale_factor(project: Project, name: str) -> float:
    """Resize factor for domain ``name`` (1.0 when the project or the domain has no diameter)."""
    if project.cell_diameter is None:
        return 1.0
    diameter = domain_diameter(project, name)
    return 1.0 if diameter is None else project.cell_diameter / diameter
