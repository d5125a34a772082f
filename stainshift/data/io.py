"""Reading and writing images and masks.

Every reader returns an explicit layout (RGB ``uint8`` HxWx3 for images, integer HxW for masks) whatever the file
holds: gray, palette, RGBA, 16-bit, any EXIF orientation. Every failure is an :class:`ImageReadError` whose one-line
message names the file and what to do. Writers are atomic and refuse to overwrite inputs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stainshift.atomic import atomic_path
from stainshift.errors import ImageReadError, ImageWriteError

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # we report decode failures ourselves

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

# PIL modes holding more than 8 bits per sample; these are decoded through OpenCV to keep full precision.
_HIGH_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_EXIF_ORIENTATION = 0x0112
_RECOPY = "re-copy the file or remove it (or pass --skip-bad)"
_MAGIC = (b"\x89PNG", b"\xff\xd8", b"BM", b"II*\x00", b"MM\x00*")  # PNG, JPEG, BMP, TIFF signatures


def is_image_file(path: Path) -> bool:
    """True when ``path`` has one of the supported image extensions (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``folder`` (hidden files and folders are ignored)."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    found = [
        p
        for p in folder.glob(pattern)
        if p.is_file() and is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(found)


def _fail(path: Path, problem: str, fix: str) -> ImageReadError:
    return ImageReadError(f"{path}: {problem}; {fix}")


def _tiff_samples_per_pixel(data: bytes) -> int | None:
    """SamplesPerPixel of a TIFF's first image, read from its header (PIL refuses to open >4-channel TIFFs)."""
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None or len(data) < 8:
        return None
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        for i in range(count):
            tag, kind, _, value = struct.unpack_from(order + "HHI4s", data, ifd + 2 + 12 * i)
            if tag == 277:  # SamplesPerPixel, a SHORT stored in the first bytes of the value field
                return struct.unpack_from(order + ("H" if kind == 3 else "I"), value)[0]
    except struct.error:
        return None
    return None


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map a >8-bit array onto 0..255 by the range of its effective bit depth.

    A 12-bit camera stored in 16-bit containers uses 0..4095: we divide by 4095, not 65535 (which would make it
    black) and not by the image's own min/max (which would change brightness from image to image and so fake a
    stain difference). Nothing is clipped.
    """
    if np.issubdtype(array.dtype, np.floating):
        hi = float(np.nanmax(array)) if array.size else 1.0
        scale = 1.0 if hi <= 1.0 else hi
        return np.clip(np.rint(np.nan_to_num(array) / scale * 255.0), 0, 255).astype(np.uint8)
    array = array.astype(np.int64)
    lo = int(array.min()) if array.size else 0
    if lo < 0:
        array = array - lo
    hi = int(array.max()) if array.size else 0
    bits = max(8, int(hi).bit_length())
    return np.rint(array * (255.0 / (2**bits - 1))).astype(np.uint8)


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation tag (1..8) to an HxW[xC] array."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: np.rot90(a, k=1)[::-1, :],
        8: lambda a: np.rot90(a, k=1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(array)) if op else array


def _is_high_depth(im: Image.Image) -> bool:
    if im.mode in _HIGH_DEPTH_MODES:
        return True
    # 16-bit RGB(A) PNG/TIFF: PIL silently keeps only the high byte; its raw mode says ";16".
    return any(";16" in str(tile[3]) for tile in getattr(im, "tile", []) if len(tile) > 3)


def _decode_high_depth(path: Path, data: bytes, orientation: int) -> np.ndarray:
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise _fail(path, "cannot decode this high-bit-depth image", "re-export it as 8- or 16-bit PNG or TIFF")
    if array.ndim == 3:
        if array.shape[2] == 4:
            array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
        elif array.shape[2] == 3:
            array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    return _apply_orientation(array, orientation)


def _to_rgb(path: Path, array: np.ndarray) -> np.ndarray:
    """Gray -> RGB, RGBA -> RGB over a white background; anything else is an error."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    channels = array.shape[2]
    if channels == 1:
        return np.repeat(array, 3, axis=2)
    if channels == 3:
        return array
    if channels == 4:
        rgb = array[:, :, :3].astype(np.float32)
        alpha = array[:, :, 3:].astype(np.float32) / 255.0
        return np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    raise _fail(path, f"has {channels} channels", "stainshift reads gray, RGB or RGBA images; export it as RGB")


def read_image(path: str | Path) -> np.ndarray:
    """Read any supported image as RGB ``uint8`` of shape (H, W, 3).

    Gray and palette images become RGB, RGBA is composited over white, 16-bit is scaled by its bit-depth range,
    EXIF orientation is applied. Raises :class:`ImageReadError` with a one-line reason otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "no such file", "check the path or the domain's folder in stainshift.toml")
    if path.is_dir():
        raise _fail(path, "is a folder, not an image", "pass an image file")
    data = path.read_bytes()
    if not data:
        raise _fail(path, "is empty (0 bytes)", _RECOPY)
    try:
        with Image.open(BytesIO(data)) as im:
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
            if _is_high_depth(im):
                array = _decode_high_depth(path, data, orientation)
                return np.ascontiguousarray(_to_rgb(path, _scale_to_uint8(array)))
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                array = np.asarray(im.convert("RGBA"))
            elif im.mode in ("RGB", "L"):
                array = np.asarray(im)
            else:  # 1, P, CMYK, YCbCr, LAB, HSV ...
                array = np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:
        channels = _tiff_samples_per_pixel(data)
        if channels and channels not in (1, 2, 3, 4):
            raise _fail(path, f"has {channels} channels", "stainshift reads gray, RGB or RGBA; export as RGB") from None
        if data.startswith(_MAGIC):
            raise _fail(path, "is corrupt (damaged header)", _RECOPY) from None
        raise _fail(path, "is not an image file", "remove it or convert it to PNG/JPG (or pass --skip-bad)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower():
            raise _fail(path, "is truncated", _RECOPY) from None
        raise _fail(path, f"is corrupt ({reason})", _RECOPY) from None
    if array.size == 0:
        raise _fail(path, "has no pixels", "remove it")
    return np.ascontiguousarray(_to_rgb(path, array.astype(np.uint8, copy=False)))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image as :func:`read_image` returns it (EXIF orientation applied), from its header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        h, w = read_image(path).shape[:2]  # the one-line error of the file's problem
        return w, h
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask as an integer label map of shape (H, W).

    Value-coded masks (gray, or RGB with R=G=B, as the sites store them) keep their grey values as labels.
    Colour-coded masks get one id per distinct colour: black is 0, the other colours are numbered 1..n in
    lexicographic (R, G, B) order, so the same palette always gives the same ids.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "mask file not found", "masks must mirror the image tree with the same file stems")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _HIGH_DEPTH_MODES:
                array = np.asarray(im).astype(np.int32)
                if array.ndim == 2:
                    return array
            if im.mode == "P":
                im = im.convert("RGB")
            array = np.asarray(im)
    except UnidentifiedImageError:
        raise _fail(path, "is not an image file", "masks must be PNG/BMP/TIFF label images") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _fail(path, f"is corrupt ({str(exc).splitlines()[0] if str(exc) else 'unreadable'})",
                    "re-export the mask") from None
    if array.ndim == 2:
        return array.astype(np.int32)
    rgb = array[:, :, :3].astype(np.int32)
    if np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2]):
        return rgb[:, :, 0].copy()
    packed = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
    colours = np.unique(packed)
    colours = colours[colours != 0]
    labels = np.zeros(packed.shape, dtype=np.int32)
    labels[packed != 0] = np.searchsorted(colours, packed[packed != 0]) + 1
    return labels


# Value-coded cell masks at the sites: 0 background, ~128-155 cytoplasm, 255 nucleus (BCCD adds interpolation
# noise). These thresholds quantise all of them, and the simulator writes the same encoding.
BACKGROUND, CYTOPLASM, NUCLEUS = 0, 1, 2
MASK_VALUES = {BACKGROUND: 0, CYTOPLASM: 128, NUCLEUS: 255}


def cell_regions(mask: np.ndarray) -> np.ndarray:
    """Quantise a value-coded cell mask to 0 background, 1 cytoplasm, 2 nucleus."""
    regions = np.zeros(mask.shape, dtype=np.uint8)
    regions[(mask >= 78) & (mask <= 205)] = CYTOPLASM
    regions[mask > 205] = NUCLEUS
    return regions


def write_image(
    path: str | Path,
    image: np.ndarray,
    *,
    protect: Iterable[str | Path] = (),
    jpeg_quality: int = 95,
) -> Path:
    """Write an RGB (H, W, 3) or gray (H, W) ``uint8`` array atomically; format follows the suffix.

    ``protect`` lists input files that must never be overwritten (harmonize passes its inputs here, as a set of
    resolved paths).
    """
    path = Path(path)
    if protect:
        target = path.resolve()
        # a set of resolved paths (harmonize passes one for thousands of writes) is checked in O(1)
        protected = protect if isinstance(protect, (set, frozenset)) else {Path(p).resolve() for p in protect}
        if target in protected:
            raise ImageWriteError(f"{path}: refusing to overwrite an input image; choose another --out folder")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ImageWriteError(f"{path}: unknown image type '{path.suffix}'; use one of {', '.join(IMAGE_EXTENSIONS)}")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageWriteError(f"{path}: expected uint8 pixels, got {image.dtype}; convert with to_uint8 first")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim != 2:
        raise ImageWriteError(f"{path}: expected an HxW or HxWx3 array, got shape {image.shape}")
    params: list[int] = []
    if path.suffix.lower() in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    ok, encoded = cv2.imencode(path.suffix.lower(), image, params)
    if not ok:
        raise ImageWriteError(f"{path}: OpenCV could not encode this image; try a .png output")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path


def write_mask(path: str | Path, labels: np.ndarray) -> Path:
    """Write a value-coded mask (``uint8`` HxW) atomically, PNG recommended (lossless)."""
    labels = np.asarray(labels)
    if labels.max(initial=0) > 255 or labels.min(initial=0) < 0:
        raise ImageWriteError(f"{path}: mask values must lie in 0..255")
    return write_image(path, labels.astype(np.uint8))
