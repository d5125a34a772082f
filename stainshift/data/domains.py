"""Listing a domain's labelled images (one subfolder per class) and their masks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stainshift.data.io import IMAGE_EXTENSIONS, list_images
from stainshift.errors import DataError
from stainshift.project import DomainConfig

# A subfolder with this name is never a class: the sites keep their masks there.
MASKS_FOLDER = "masks"


@dataclass(frozen=True)
class Sample:
    """One labelled image of a domain. ``key`` is its path relative to the domain folder (posix)."""

    key: str
    label: str
    path: Path
    mask: Path | None


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
