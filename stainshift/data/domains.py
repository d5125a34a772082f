"""Listing a domain's labelled images (one subfolder per class) and their masks; naming a folder as a domain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stainshift.data.io import IMAGE_EXTENSIONS, list_images, read_image
from stainshift.errors import DataError, ProjectError
from stainshift.project import DomainConfig, Project, parse_cell_diameter, parse_split, save_project, validate_name

# A subfolder with this name is never a class: the sites keep their masks there.
MASKS_FOLDER = "masks"


@dataclass(frozen=True)
class Sample:
    """One labelled image of a domain. ``key`` is its path relative to the domain folder (posix).

    ``box`` (x, y, w, h) is set for whole smear fields (``fields = true``): the window, in the field's pixels, that
    frames its white cell; every step reads the sample through :func:`read_sample`, which crops it.
    """

    key: str
    label: str
    path: Path
    mask: Path | None
    box: tuple[int, int, int, int] | None = None


def background_colour(image: np.ndarray) -> np.ndarray:
    """The field's background: the median colour of its brightest 30% of pixels (cells are darker than the glass)."""
    pixels = image.reshape(-1, image.shape[-1])
    brightness = pixels.astype(np.int32).sum(axis=1)
    return np.median(pixels[brightness >= np.percentile(brightness, 70)], axis=0)


def crop_box(image: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The ``box`` window of ``image`` (the whole image when ``box`` is None). Where the window reaches past the
    image's edge it is filled with the field's background colour (0 for masks), so the cell stays at its centre:
    reflection would mirror a cell near the edge into a second one."""
    if box is None:
        return image
    x, y, w, h = box
    H, W = image.shape[:2]
    window = image[max(0, y):min(H, y + h), max(0, x):min(W, x + w)]
    pads = (max(0, -y), max(0, y + h - H), max(0, -x), max(0, x + w - W))
    if not any(pads):
        return window
    fill = background_colour(image).tolist() if image.ndim == 3 else 0
    return cv2.copyMakeBorder(np.ascontiguousarray(window), *pads, cv2.BORDER_CONSTANT, value=fill)


def read_sample(sample: Sample) -> np.ndarray:
    """The sample's image (RGB uint8), cropped to its cell's window when the domain holds whole fields."""
    return crop_box(read_image(sample.path), sample.box)


def _class_folders(domain: DomainConfig) -> dict[str, Path]:
    folder = domain.folder
    if not folder.is_dir():
        raise DataError(f"{folder}: domain '{domain.name}' folder does not exist; fix its path in stainshift.toml")
    masks = domain.masks_folder
    found = {
        p.name: p
        for p in sorted(folder.iterdir())
        if p.is_dir() and not p.name.startswith(".") and p.name != MASKS_FOLDER and p.resolve() != masks
    }
    if domain.classes:
        missing = [c for c in domain.classes if c not in found]
        if missing:
            raise DataError(f"{folder}: domain '{domain.name}' lists classes {missing} with no subfolder; "
                            f"fix `classes` in stainshift.toml (found: {', '.join(found) or 'none'})")
        return {c: found[c] for c in domain.classes}
    return found


def class_names(domain: DomainConfig) -> list[str]:
    """The domain's classes: its ``classes`` setting, else its non-empty class subfolders in sorted order."""
    return [c for c, p in _class_folders(domain).items() if domain.classes or list_images(p)]


def empty_classes(domain: DomainConfig) -> list[str]:
    """Class folders that hold no image (left out of every split and count; ``inspect`` and ``split`` say so)."""
    return [c for c, p in _class_folders(domain).items() if not list_images(p)]


def find_mask(domain: DomainConfig, key: str) -> Path | None:
    """The mask for image ``key``: same relative folder and file stem under the domain's masks folder."""
    masks = domain.masks_folder
    if masks is None:
        return None
    rel = Path(key)
    for ext in (".png", *IMAGE_EXTENSIONS):
        candidate = masks / rel.parent / (rel.stem + ext)
        if candidate.is_file():
            return candidate
    return None


def scan_domain(domain: DomainConfig) -> list[Sample]:
    """All labelled images of ``domain``, sorted by class order then path.

    Raises :class:`DataError` when the folder is missing, has no class subfolders, or holds no images.
    """
    folders = _class_folders(domain)
    if not folders:
        raise DataError(f"{domain.folder}: domain '{domain.name}' has no class subfolders; put the images in "
                        "one subfolder per class (e.g. neutrophil/, lymphocyte/)")
    root = domain.folder
    samples = [
        Sample(key=(k := p.relative_to(root).as_posix()), label=label, path=p, mask=find_mask(domain, k))
        for label, folder in folders.items()
        for p in list_images(folder)
    ]
    if not samples:
        raise DataError(f"{root}: domain '{domain.name}' has no images ({' '.join(IMAGE_EXTENSIONS)}) in its "
                        "class subfolders; point it at a folder with one subfolder of images per class")
    return samples


def _portable(path: Path, root: Path) -> str:
    """Relative to the project folder when inside it (the project can move), absolute otherwise."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def add_domain(project: Project, name: str, path: str | Path, masks: str | Path | None = None,
               classes: Sequence[str] | None = None, cell_diameter: float | str | None = None,
               split: Sequence[float] | None = None, force: bool = False, fields: bool = False,
               progress: bool = False) -> tuple[Project, list[Sample]]:
    """Name ``path`` (one subfolder of images per class) as domain ``name`` and save the project file.

    ``masks`` defaults to ``PATH/masks`` when that folder exists. The folder is scanned now, so a bad folder fails
    here with its reason rather than at training time. With ``fields`` (whole smear fields) every field's white cells
    are located now too (:mod:`stainshift.data.fields`). Returns the saved project and the domain's samples.
    """
    name = validate_name(name)
    if name in project.domains and not force:
        raise ProjectError(f"domain '{name}' already exists in {project.file}; pass --force to replace it")
    folder = Path(path).resolve()
    if not folder.is_dir():
        raise ProjectError(f"{path}: no such folder; give a folder with one subfolder of images per class")
    mask_dir = Path(masks).resolve() if masks else None
    if mask_dir is None and (folder / MASKS_FOLDER).is_dir():
        mask_dir = folder / MASKS_FOLDER
    if mask_dir is not None and not mask_dir.is_dir():
        raise ProjectError(f"{masks}: masks folder not found; give the folder holding <class>/<stem>.png masks")
    domain = DomainConfig(
        name=name, path=_portable(folder, project.root), root=project.root,
        masks=_portable(mask_dir, project.root) if mask_dir else None,
        classes=tuple(classes) if classes else None,
        cell_diameter=parse_cell_diameter(cell_diameter, "--cell-diameter"),
        split=parse_split(list(split), "--split") if split else None,
        fields=fields,
    )
    samples = scan_domain(domain)
    project = project.with_domain(domain)
    if fields:
        from stainshift.data.fields import field_cells

        field_cells(project, name, samples, progress)
    save_project(project)
    return project, samples
