"""The cell-shape database: white-cell outlines with their nuclei, and red-cell outlines, cut from real masks.

A shape is a small ``uint8`` crop: 0 outside the cell, :data:`BODY` (cytoplasm, or a red cell's body),
:data:`NUCLEUS`. Shapes keep the pixel scale of the masks they came from; :class:`FieldStats` says how many red
cells a field holds and how large they are next to a white cell, so layouts can be drawn at that scale.

    >>> db = simulator_database(per_class=20)              # or database_for_domain(project, "jtsc")
    >>> shape = db.sample("neutrophil", np.random.default_rng(0))   # rotated, scaled, flipped copy
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stainshift.atomic import atomic_path
from stainshift.data.io import cell_regions, read_mask
from stainshift.errors import DataError, StainshiftError

OUTSIDE, BODY, NUCLEUS = 0, 1, 2
RED_CELL = "red_cell"
# bumped when extraction changes, so a cached database built by older code is rebuilt
SHAPES_VERSION = 1
MIN_AREA = 40  # pixels; smaller components of a mask are annotation specks, not cells


@dataclass(frozen=True)
class FieldStats:
    """Red cells in a whole field, measured on boxes: count per field (mean, sd) for a field of ``field_size``
    pixels (w, h), and the red-cell diameter as a fraction of the white-cell diameter in the same fields."""

    red_mean: float
    red_sd: float
    field_size: tuple[int, int]
    red_to_white_diameter: float
    white_mean: float
    white_px: float
    source: str

    def scale_factor(self, size: tuple[int, int], white_px: float) -> float:
        """How many measured fields' worth of cell area a field of ``size`` (w, h) holds when its white cells are
        ``white_px`` wide (the measured fields' white cells were ``self.white_px`` wide)."""
        area_ratio = (size[0] * size[1]) / (self.field_size[0] * self.field_size[1])
        return area_ratio * (self.white_px / white_px) ** 2

    def red_count_for(self, size: tuple[int, int], white_px: float) -> tuple[float, float]:
        """Mean and sd of the red-cell count for such a field (a sum of independent fields' counts)."""
        factor = self.scale_factor(size, white_px)
        return self.red_mean * factor, self.red_sd * math.sqrt(factor)


# Measured on ../shared/data/bccd_voc (364 fields of 640x480, by `field_stats_from_voc`; see
# benchmarks/results/synth_field_stats.md): used when no VOC folder is given.
BCCD_FIELD_STATS = FieldStats(red_mean=11.41, red_sd=4.27, field_size=(640, 480), red_to_white_diameter=0.54,
                              white_mean=1.02, white_px=188.3, source="bccd_voc (built-in)")


def field_stats_from_voc(folder: str | Path) -> FieldStats:
    """Red- and white-cell statistics of a folder of Pascal VOC annotations (``*.xml``, names RBC and WBC)."""
    import xml.etree.ElementTree as ET

    files = sorted(Path(folder).glob("*.xml"))
    if not files:
        raise DataError(f"{folder}: no Pascal VOC *.xml annotations here; give the folder of annotations")
    red_counts, white_counts, red_sides, white_sides, sizes = [], [], [], [], set()
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as exc:
            raise DataError(f"{f}: not a readable VOC annotation ({exc}); fix or remove it") from None
        size = root.find("size")
        if size is not None:
            sizes.add((int(size.findtext("width", "0")), int(size.findtext("height", "0"))))
        n_red = n_white = 0
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip().upper()
            box = obj.find("bndbox")
            if box is None:
                continue
            w = float(box.findtext("xmax", "0")) - float(box.findtext("xmin", "0"))
            h = float(box.findtext("ymax", "0")) - float(box.findtext("ymin", "0"))
            if name == "RBC":
                n_red += 1
                red_sides.append(math.sqrt(max(w * h, 0.0)))
            elif name == "WBC":
                n_white += 1
                white_sides.append(math.sqrt(max(w * h, 0.0)))
        red_counts.append(n_red)
        white_counts.append(n_white)
    if not red_sides or not white_sides:
        raise DataError(f"{folder}: the annotations name no RBC and WBC boxes; red-cell statistics need both")
    field_size = max(sizes, key=lambda s: s[0] * s[1]) if sizes else (640, 480)
    return FieldStats(
        red_mean=float(np.mean(red_counts)), red_sd=float(np.std(red_counts, ddof=1)), field_size=field_size,
        red_to_white_diameter=float(np.median(red_sides) / np.median(white_sides)),
        white_mean=float(np.mean(white_counts)), white_px=float(np.median(white_sides)),
        source=f"{Path(folder).name} ({len(files)} fields)")


@dataclass
class ShapeDatabase:
    """Shapes per class (``shapes[cls]``: list of uint8 crops), where each class's shapes came from, and the
    field statistics layouts use. ``key`` identifies the inputs it was built from (for the cache)."""

    name: str
    shapes: dict[str, list[np.ndarray]]
    sources: dict[str, str]
    field_stats: FieldStats = BCCD_FIELD_STATS
    key: str = ""
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        empty = [c for c, s in self.shapes.items() if not s]
        for c in empty:
            del self.shapes[c]
        if not self.white_classes():
            raise DataError(f"shape database {self.name!r} holds no white-cell shapes; give masks with cells "
                            "(0 background, ~128 cytoplasm, 255 nucleus)")

    def white_classes(self) -> list[str]:
        return [c for c in self.shapes if c != RED_CELL]

    def counts(self) -> dict[str, int]:
        return {c: len(s) for c, s in self.shapes.items()}

    def diameter(self, cls: str | None = None) -> float:
        """Median equivalent diameter (pixels) of the shapes of ``cls`` (None: all white cells)."""
        pool = self.shapes[cls] if cls else [s for c in self.white_classes() for s in self.shapes[c]]
        return float(np.median([math.sqrt(4.0 * np.count_nonzero(s) / math.pi) for s in pool]))

    def check_class(self, cls: str) -> None:
        if cls not in self.shapes:
            raise StainshiftError(f"class {cls!r} has no shapes in database {self.name!r}; "
                                  f"it has: {', '.join(self.shapes)}")

    def sample(self, cls: str, rng: np.random.Generator, scale: float = 1.0, augment: bool = True) -> np.ndarray:
        """A random shape of ``cls``; with ``augment``, turned by a random angle, scaled by ``scale`` times
        a random factor (sd 8%) and flipped at random (paper 001's shape augmentation)."""
        self.check_class(cls)
        pool = self.shapes[cls]
        shape = pool[int(rng.integers(len(pool)))]
        if not augment:
            return resize_shape(shape, scale) if scale != 1.0 else shape
        factor = scale * float(np.exp(rng.normal(0.0, 0.08)))
        angle = float(rng.uniform(0.0, 360.0))
        shape = transform_shape(shape, angle, factor)
        if rng.random() < 0.5:
            shape = shape[:, ::-1]
        if rng.random() < 0.5:
            shape = shape[::-1]
        return np.ascontiguousarray(shape)

    # -- files -----------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the database as one ``.npz`` (no pickles): every shape, plus a JSON header."""
        arrays: dict[str, np.ndarray] = {}
        index = []
        for cls, pool in self.shapes.items():
            for i, s in enumerate(pool):
                arrays[f"s{len(index)}"] = s
                index.append([cls, i])
        header = {"version": SHAPES_VERSION, "name": self.name, "sources": self.sources, "key": self.key,
                  "field": asdict(self.field_stats), "skipped": self.skipped, "index": index}
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ShapeDatabase:
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
                shapes: dict[str, list[np.ndarray]] = {}
                for k, (name, _) in enumerate(header["index"]):
                    shapes.setdefault(name, []).append(data[f"s{k}"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a shape database ({exc}); delete it and build again with "
                            "`stainshift synth shapes`") from None
        f = header["field"]
        stats = FieldStats(**{**f, "field_size": tuple(f["field_size"])})
        return cls(header["name"], shapes, header["sources"], stats, header["key"], header.get("skipped", {}))

    @staticmethod
    def version_of(path: str | Path) -> tuple[int, str]:
        """(version, key) stored in a database file, or (0, "") when unreadable."""
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
            return int(header.get("version", 0)), str(header.get("key", ""))
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            return 0, ""


def transform_shape(shape: np.ndarray, angle: float, factor: float) -> np.ndarray:
    """``shape`` turned by ``angle`` degrees and scaled by ``factor`` (nearest neighbour: labels stay labels),
    cropped to its content."""
    h, w = shape.shape
    side = math.ceil(math.hypot(h, w) * factor) + 2
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, factor)
    m[0, 2] += side / 2.0 - w / 2.0
    m[1, 2] += side / 2.0 - h / 2.0
    out = cv2.warpAffine(shape, m, (side, side), flags=cv2.INTER_NEAREST, borderValue=0)
    return crop_to_content(out)


def resize_shape(shape: np.ndarray, factor: float) -> np.ndarray:
    h, w = shape.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return crop_to_content(cv2.resize(shape, size, interpolation=cv2.INTER_NEAREST))


def crop_to_content(shape: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(shape)
    if len(ys) == 0:
        return shape[:1, :1]
    return np.ascontiguousarray(shape[ys.min():ys.max() + 1, xs.min():xs.max() + 1])


# -- extraction ------------------------------------------------------------------------------------------------
def shapes_from_mask(regions: np.ndarray, *, keep_border: bool = False, min_area: int = MIN_AREA,
                     need_nucleus: bool = True) -> tuple[list[np.ndarray], int]:
    """The cells of one quantised mask (0 / 1 cytoplasm / 2 nucleus, as :func:`cell_regions` gives).

    Each connected cell (cytoplasm with its nucleus) becomes one crop. Cells cut by the image border and specks
    are left out (their outline is not a cell's), as are cells without a nucleus when ``need_nucleus``.
    Returns the crops and the number of components left out.
    """
    cells = (regions > 0).astype(np.uint8)
    cells = cv2.morphologyEx(cells, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))  # quantisation specks
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cells, connectivity=8)
    h, w = regions.shape
    out, skipped = [], 0
    for k in range(1, n):
        x, y, bw, bh, area = stats[k]
        touches = x == 0 or y == 0 or x + bw == w or y + bh == h
        if area < min_area or (touches and not keep_border):
            skipped += 1
            continue
        inside = labels[y:y + bh, x:x + bw] == k
        crop = np.where(inside, regions[y:y + bh, x:x + bw], 0).astype(np.uint8)
        crop[inside & (crop == 0)] = BODY  # opening may have filled a hole
        crop = np.where(crop == 2, NUCLEUS, np.where(crop > 0, BODY, OUTSIDE)).astype(np.uint8)
        if need_nucleus and not (crop == NUCLEUS).any():
            skipped += 1
            continue
        out.append(crop)
    return out, skipped


def shapes_from_masks(items: Iterable[tuple[Path, str]], *, keep_border: bool = False
                      ) -> tuple[dict[str, list[np.ndarray]], dict[str, int]]:
    """Shapes per class from value-coded mask files (``(path, class)`` pairs): 0 background, ~128-155
    cytoplasm, 255 nucleus, noisy values quantised."""
    shapes: dict[str, list[np.ndarray]] = {}
    skipped: dict[str, int] = {}
    for path, cls in items:
        found, n_skipped = shapes_from_mask(cell_regions(read_mask(path)), keep_border=keep_border)
        shapes.setdefault(cls, []).extend(found)
        skipped[cls] = skipped.get(cls, 0) + n_skipped
    return shapes, skipped


def red_cell_shapes(white_diameter: float, ratio: float, n: int = 200, seed: int = 0) -> list[np.ndarray]:
    """Red-cell outlines: smooth, slightly irregular ellipses (the simulator's red-cell model) of diameter
    ``ratio * white_diameter`` (sd 8%). Real red-cell masks are not in the shared data; their sizes are."""
    from stainshift.data.simulate import _blob

    rng = np.random.default_rng([seed, 17])
    out = []
    for _ in range(n):
        r = 0.5 * ratio * white_diameter * float(np.exp(rng.normal(0.0, 0.08)))
        side = math.ceil(2.6 * r) + 4
        canvas = np.zeros((side, side), np.uint8)
        poly = _blob(rng, (side / 2, side / 2), r, irregular=0.03, aspect=float(rng.uniform(1.0, 1.12)))
        cv2.fillPoly(canvas, [poly], BODY, cv2.LINE_8, 4)
        out.append(crop_to_content(canvas))
    return out


def inputs_key(paths: Sequence[Path], extra: str = "") -> str:
    """A hash of the mask files (path, size, modification time) and of ``extra``: the cache key."""
    h = hashlib.sha256(f"v{SHAPES_VERSION}|{extra}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def build_database(name: str, items: Sequence[tuple[Path, str]], *, field_stats: FieldStats = BCCD_FIELD_STATS,
                   red_shapes: int = 200, seed: int = 0, keep_border: bool = False, key: str = "") -> ShapeDatabase:
    """A database from mask files with their classes, plus red-cell outlines sized by ``field_stats``."""
    if not items:
        raise DataError(f"{name}: no masks to build a shape database from; the domain needs a masks folder "
                        "(masks/<class>/<stem>.png: 0 background, ~128 cytoplasm, 255 nucleus)")
    shapes, skipped = shapes_from_masks(items, keep_border=keep_border)
    sources = {c: f"{name} masks ({len(s)} cells)" for c, s in shapes.items()}
    db = ShapeDatabase(name, shapes, sources, field_stats, key, skipped)
    db.shapes[RED_CELL] = red_cell_shapes(db.diameter(), field_stats.red_to_white_diameter, red_shapes, seed)
    db.sources[RED_CELL] = f"ellipses sized from {field_stats.source}"
    return db


def folder_database(folder: str | Path) -> ShapeDatabase:
    """A database from a folder of value-coded masks: files in a subfolder belong to that class, loose files to
    ``white_cell`` (e.g. whole smear fields whose cells carry no class)."""
    from stainshift.data.io import is_image_file

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such masks folder; give a folder of mask images (0 background, ~128 "
                        "cytoplasm, 255 nucleus)")
    items = [(p, p.parent.name if p.parent != folder else "white_cell")
             for p in sorted(folder.rglob("*")) if p.is_file() and is_image_file(p)]
    return build_database(folder.name, items, key=inputs_key([p for p, _ in items]))


def simulator_database(per_class: int = 40, size: int = 96, seed: int = 0,
                       classes: Sequence[str] | None = None) -> ShapeDatabase:
    """Shapes of the simulator's white cells (its masks) and red cells at the simulator's scale."""
    from stainshift.data.simulate import CLASSES, make_cell

    classes = tuple(classes or CLASSES)
    shapes: dict[str, list[np.ndarray]] = {}
    for cls in classes:
        for i in range(per_class):
            found, _ = shapes_from_mask(cell_regions(make_cell(cls, i, size, seed).mask), keep_border=True)
            shapes.setdefault(cls, []).extend(found[:1])
    db = ShapeDatabase("simulator", shapes, {c: f"simulator masks ({per_class} cells)" for c in classes},
                       BCCD_FIELD_STATS, key=f"simulator-{per_class}-{size}-{seed}-{','.join(classes)}")
    # the simulator's red cells: radius 3.5-4.2 um in a 32 um field
    red_ratio = (2 * 3.85 * size / 32.0) / db.diameter()
    db.shapes[RED_CELL] = red_cell_shapes(db.diameter(), red_ratio, 200, seed)
    db.sources[RED_CELL] = "simulator red-cell ellipses"
    return db


def contact_sheet(db: ShapeDatabase, per_class: int = 12, cell: int = 64, seed: int = 0) -> np.ndarray:
    """An RGB picture: one row per class, ``per_class`` shapes each (grey body, dark nucleus), every shape
    scaled by the same factor so sizes compare across classes."""
    from stainshift.synth.masks import class_colour

    rows = list(db.shapes)
    biggest = max(max(s.shape) for pool in db.shapes.values() for s in pool)
    factor = min(1.0, (cell - 4) / biggest)
    label_w = 110
    sheet = np.full((cell * len(rows), label_w + cell * per_class, 3), 255, np.uint8)
    rng = np.random.default_rng(seed)
    for r, cls in enumerate(rows):
        pool = db.shapes[cls]
        picks = rng.choice(len(pool), size=min(per_class, len(pool)), replace=False)
        cv2.putText(sheet, f"{cls[:12]}", (4, r * cell + cell // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
        cv2.putText(sheet, f"n={len(pool)}", (4, r * cell + cell // 2 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (90, 90, 90), 1, cv2.LINE_AA)
        for j, k in enumerate(picks):
            s = resize_shape(pool[int(k)], factor)
            body, nucleus = class_colour(cls, 0)
            tile = np.full((cell, cell, 3), 255, np.uint8)
            h, w = min(s.shape[0], cell), min(s.shape[1], cell)
            y0, x0 = (cell - h) // 2, (cell - w) // 2
            view = tile[y0:y0 + h, x0:x0 + w]
            view[s[:h, :w] == BODY] = body
            view[s[:h, :w] == NUCLEUS] = nucleus
            sheet[r * cell:(r + 1) * cell, label_w + j * cell:label_w + (j + 1) * cell] = tile
    return sheet


def domain_database(project, domain: str, *, rebuild: bool = False, voc: str | Path | None = None) -> ShapeDatabase:
    """The shape database of a project domain (its masks folder), built once and cached under ``runs/``.

    The cache is reused while the mask files (paths, sizes, times) and the field statistics are unchanged.
    ``voc``: a folder of Pascal VOC boxes to measure red-cell counts and sizes from (default: the built-in
    bccd_voc figures).
    """
    from stainshift.data.domains import scan_domain
    from stainshift.runs import shapes_file

    config = project.domain(domain)
    samples = scan_domain(config)
    items = [(s.mask, s.label) for s in samples if s.mask is not None]
    if not items:
        raise DataError(f"domain '{domain}' has no masks (looked in {config.masks_folder or 'no masks folder'}); "
                        "add one with `stainshift domains add NAME PATH --masks DIR` (0 background, ~128 "
                        "cytoplasm, 255 nucleus)")
    stats = field_stats_from_voc(voc) if voc else BCCD_FIELD_STATS
    key = inputs_key([p for p, _ in items], extra=json.dumps(asdict(stats), sort_keys=True))
    path = shapes_file(project, domain)
    if not rebuild and path.exists() and ShapeDatabase.version_of(path) == (SHAPES_VERSION, key):
        return ShapeDatabase.load(path)
    db = build_database(domain, items, field_stats=stats, key=key)
    db.save(path)
    return db
