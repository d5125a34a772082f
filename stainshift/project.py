"""The project file ``stainshift.toml``: where runs live, where to track, and the named image domains.

```toml
[project]
runs = "runs"                               # runs, splits, checkpoints and the embedded mlflow.db
tracking_uri = "sqlite:///runs/mlflow.db"    # any mlflow URI; relative sqlite paths are relative to this file
cell_diameter = 64                           # optional: rescale every domain so cells span this many pixels
split = [0.6, 0.2, 0.2]                      # train / val / test fractions, per class
seed = 0

[domains.clinic]
path = "data/pbc_barcelona"                  # one subfolder per class; relative to this file
[domains.hgtp]
path = "data/jtsc_tecom"
masks = "data/jtsc_tecom/masks"              # optional, same relative layout and file stems
classes = ["neutrophil", "lymphocyte"]       # optional subset / order
cell_diameter = 62.0                         # optional: px, or "auto" (estimated by `domains inspect`)
split = [0.4, 0.2, 0.4]                      # optional per-domain override
[domains.newsite]
path = "data/newsite"
fields = true                                # whole smear fields: each white cell is located and framed
```

Everything here is an immutable dataclass: commands build a new :class:`Project` and :func:`save_project` it.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from stainshift.atomic import atomic_write_text
from stainshift.errors import ProjectError

PROJECT_FILE = "stainshift.toml"
DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"
DEFAULT_SPLIT = (0.6, 0.2, 0.2)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class DomainConfig:
    """One named image domain (a hospital / site). Paths are stored as written, resolved against ``root``."""

    name: str
    path: str
    root: Path
    masks: str | None = None
    classes: tuple[str, ...] | None = None
    cell_diameter: float | str | None = None  # px, "auto", or None (unknown: no rescaling)
    split: tuple[float, float, float] | None = None
    fields: bool = False  # whole smear fields: every step sees the located white cell, framed at the common scale

    @property
    def folder(self) -> Path:
        return (self.root / self.path).resolve()

    @property
    def masks_folder(self) -> Path | None:
        return (self.root / self.masks).resolve() if self.masks else None

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path}
        if self.masks:
            out["masks"] = self.masks
        if self.classes:
            out["classes"] = list(self.classes)
        if self.cell_diameter is not None:
            out["cell_diameter"] = self.cell_diameter
        if self.split:
            out["split"] = list(self.split)
        if self.fields:
            out["fields"] = True
        return out


@dataclass(frozen=True)
class Project:
    """A loaded project file; ``root`` is the folder holding it."""

    file: Path
    runs_dir: str = "runs"
    tracking: str = DEFAULT_TRACKING_URI
    cell_diameter: float | None = None
    split: tuple[float, float, float] = DEFAULT_SPLIT
    seed: int = 0
    domains: dict[str, DomainConfig] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.file.parent

    @property
    def runs(self) -> Path:
        return (self.root / self.runs_dir).resolve()

    @property
    def tracking_uri(self) -> str:
        """The mlflow URI with a relative sqlite path made absolute (relative to the project file)."""
        prefix = "sqlite:///"
        if self.tracking.startswith(prefix) and not self.tracking.startswith(prefix + "/"):
            return prefix + str((self.root / self.tracking[len(prefix):]).resolve())
        return self.tracking

    def domain(self, name: str) -> DomainConfig:
        """The domain called ``name``; a one-line error lists the known ones otherwise."""
        try:
            return self.domains[name]
        except KeyError:
            known = ", ".join(sorted(self.domains)) or "none yet"
            raise ProjectError(
                f"unknown domain '{name}' in {self.file} (known: {known}); add it with "
                f"`stainshift domains add {name} PATH`"
            ) from None

    def split_for(self, name: str) -> tuple[float, float, float]:
        return self.domain(name).split or self.split

    def with_domain(self, domain: DomainConfig) -> Project:
        return dataclasses.replace(self, domains={**self.domains, domain.name: domain})

    def to_toml(self) -> dict[str, Any]:
        head: dict[str, Any] = {"runs": self.runs_dir, "tracking_uri": self.tracking, "seed": self.seed,
                                "split": list(self.split)}
        if self.cell_diameter is not None:
            head["cell_diameter"] = self.cell_diameter
        return {"project": head, "domains": {n: d.to_toml() for n, d in self.domains.items()}}


def parse_split(value: Any, where: str) -> tuple[float, float, float]:
    if not (isinstance(value, list | tuple) and len(value) == 3 and all(isinstance(v, int | float) for v in value)):
        raise ProjectError(f"{where}: split must be three numbers [train, val, test], e.g. [0.6, 0.2, 0.2]")
    fractions = tuple(float(v) for v in value)
    if any(v < 0 for v in fractions) or abs(sum(fractions) - 1.0) > 1e-6 or fractions[0] <= 0:
        raise ProjectError(f"{where}: split fractions must be >= 0, train > 0, and sum to 1 (got {list(value)})")
    return fractions  # type: ignore[return-value]


def parse_cell_diameter(value: Any, where: str) -> float | str | None:
    if value is None or value == "auto":
        return value
    if isinstance(value, int | float) and value > 0:
        return float(value)
    raise ProjectError(f"{where}: cell_diameter must be a positive number of pixels or \"auto\" (got {value!r})")


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise ProjectError(f"invalid domain name '{name}': use letters, digits, '_' or '-', starting with a letter")
    return name


def _parse_domain(name: str, raw: Any, root: Path, file: Path) -> DomainConfig:
    where = f"{file} [domains.{name}]"
    validate_name(name)
    if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
        raise ProjectError(f"{where}: needs path = \"folder with one subfolder per class\"")
    unknown = set(raw) - {"path", "masks", "classes", "cell_diameter", "split", "fields"}
    if unknown:
        raise ProjectError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: path, masks, classes, "
                           "cell_diameter, split, fields")
    if not isinstance(raw.get("fields", False), bool):
        raise ProjectError(f"{where}: fields must be true or false (true: the images are whole smear fields)")
    classes = raw.get("classes")
    if classes is not None and not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ProjectError(f"{where}: classes must be a non-empty list of class folder names")
    return DomainConfig(
        name=name,
        path=raw["path"],
        root=root,
        masks=raw.get("masks"),
        classes=tuple(classes) if classes else None,
        cell_diameter=parse_cell_diameter(raw.get("cell_diameter"), where),
        split=parse_split(raw["split"], where) if "split" in raw else None,
        fields=raw.get("fields", False),
    )


def load_project(path: str | Path | None = None) -> Project:
    """Load ``stainshift.toml`` (default: in the working directory)."""
    file = Path(path) if path else Path.cwd() / PROJECT_FILE
    if file.is_dir():
        file = file / PROJECT_FILE
    if not file.exists():
        raise ProjectError(f"{file}: no project file; create one with `stainshift domains add NAME PATH` "
                           "or run `stainshift demo`")
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{file}: not valid TOML ({exc}); fix the syntax") from None
    file = file.resolve()
    head = raw.get("project", {})
    unknown = set(head) - {"runs", "tracking_uri", "cell_diameter", "split", "seed"}
    if unknown:
        raise ProjectError(f"{file} [project]: unknown key(s) {sorted(unknown)}")
    diameter = parse_cell_diameter(head.get("cell_diameter"), f"{file} [project]")
    if diameter == "auto":
        raise ProjectError(f"{file} [project]: cell_diameter is the common target size in px; \"auto\" is for domains")
    domains = {n: _parse_domain(n, d, file.parent, file) for n, d in raw.get("domains", {}).items()}
    return Project(
        file=file,
        runs_dir=str(head.get("runs", "runs")),
        tracking=str(head.get("tracking_uri", DEFAULT_TRACKING_URI)),
        cell_diameter=diameter,  # type: ignore[arg-type]
        split=parse_split(head["split"], f"{file} [project]") if "split" in head else DEFAULT_SPLIT,
        seed=int(head.get("seed", 0)),
        domains=domains,
    )


def load_or_new_project(path: str | Path | None = None) -> Project:
    """Like :func:`load_project`, but a missing file gives a fresh project with the embedded defaults."""
    file = Path(path) if path else Path.cwd() / PROJECT_FILE
    if file.is_dir():
        file = file / PROJECT_FILE
    if file.exists():
        return load_project(file)
    return Project(file=file.resolve())


def save_project(project: Project) -> Path:
    """Write the project file atomically."""
    atomic_write_text(project.file, tomli_w.dumps(project.to_toml()))
    return project.file
