"""Image and mask reading/writing: every layout to RGB uint8, every bad file to a one-line error."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from stainshift.data.io import cell_regions, image_size, list_images, read_image, read_mask, write_image
from stainshift.errors import ImageReadError, ImageWriteError

from .conftest import cell_image


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_formats_round_trip(tmp_path, rng, ext):
    image = cell_image(rng)
    path = write_image(tmp_path / f"a{ext}", image)
    assert np.array_equal(read_image(path), image)


def test_jpeg_round_trip_is_close(tmp_path, rng):
    image = cell_image(rng)
    out = read_image(write_image(tmp_path / "a.jpg", image))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).mean() < 4


def test_gray_becomes_rgb(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (8, 8, 3)
    assert np.array_equal(out[:, :, 0], gray) and np.array_equal(out[:, :, 2], gray)


def test_palette_becomes_rgb(tmp_path, rng):
    image = cell_image(rng)
    Image.fromarray(image).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert np.array_equal(read_image(tmp_path / "p.png"), expected)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.shape == (4, 4, 3)
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[3, 3]) == (255, 255, 255)


def test_16bit_gray_is_scaled_by_bit_depth_not_clipped(tmp_path):
    # a 12-bit camera image in a 16-bit PNG: 0..4095 must map onto 0..255, not to black or clipped white
    values = np.linspace(0, 4095, 64).astype(np.uint16).reshape(8, 8)
    cv2.imwrite(str(tmp_path / "g16.png"), values)
    out = read_image(tmp_path / "g16.png")[:, :, 0]
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # order kept
    assert len(np.unique(out)) > 50  # not clipped into a few levels


def test_16bit_rgb_keeps_full_precision(tmp_path):
    bgr = np.zeros((4, 4, 3), np.uint16)
    bgr[..., 2] = 65535  # red at full scale
    bgr[..., 1] = 32768
    cv2.imwrite(str(tmp_path / "c16.png"), bgr)
    out = read_image(tmp_path / "c16.png")
    assert tuple(out[0, 0]) == (255, 128, 0)


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, :5] = 255  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(image).save(tmp_path / "r.jpg", exif=exif, quality=100)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape[:2] == (20, 10)
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # the stripe is now at the top
    assert image_size(tmp_path / "r.jpg") == (10, 20)  # from the header, oriented as read_image returns it


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"this is a csv file, not an image\n", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    message = str(err.value)
    assert str(path) in message and expected in message
    assert "\n" not in message


def test_truncated_jpeg(tmp_path, rng):
    path = write_image(tmp_path / "t.jpg", cell_image(rng, 64))
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path)


def _multichannel_tiff(path, width: int, height: int, channels: int) -> None:
    """A minimal uncompressed 8-bit TIFF with ``channels`` samples per pixel (a multispectral export)."""
    n_entries, header = 11, 8
    bits_at = header + 2 + 12 * n_entries + 4
    extra_at = bits_at + 2 * channels
    pixels_at = extra_at + 2 * (channels - 1)
    pixels = bytes(width * height * channels)

    def short(tag, value):
        return struct.pack("<HHIHH", tag, 3, 1, value, 0)

    def pointer(tag, kind, count, offset):
        return struct.pack("<HHII", tag, kind, count, offset)

    entries = [short(256, width), short(257, height), pointer(258, 3, channels, bits_at), short(259, 1),
               short(262, 1), pointer(273, 4, 1, pixels_at), short(277, channels), short(278, height),
               pointer(279, 4, 1, len(pixels)), short(284, 1), pointer(338, 3, channels - 1, extra_at)]
    body = b"II*\x00" + struct.pack("<IH", header, n_entries) + b"".join(entries) + struct.pack("<I", 0)
    body += struct.pack(f"<{channels}H", *[8] * channels) + bytes(2 * (channels - 1)) + pixels
    path.write_bytes(body)


def test_wrong_channel_count(tmp_path):
    _multichannel_tiff(tmp_path / "five.tif", 6, 6, 5)
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "five.tif")
    assert "five.tif" in str(err.value) and "5 channels" in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_value_and_colour_coded_masks(tmp_path):
    value = np.zeros((6, 6), np.uint8)
    value[1:5, 1:5] = 128
    value[2:4, 2:4] = 255
    write_image(tmp_path / "v.png", value)
    labels = read_mask(tmp_path / "v.png")
    assert set(np.unique(labels)) == {0, 128, 255}
    assert cell_regions(labels)[3, 3] == 2 and cell_regions(labels)[1, 1] == 1
    colour = np.zeros((6, 6, 3), np.uint8)
    colour[:3] = (255, 0, 0)
    colour[3:, 3:] = (0, 0, 255)
    write_image(tmp_path / "c.png", colour)
    ids = read_mask(tmp_path / "c.png")
    assert ids[0, 0] == 2 and ids[5, 5] == 1 and ids[5, 0] == 0  # (0,0,255) < (255,0,0)


def test_bccd_style_noisy_mask_quantises():
    noisy = np.array([[0, 30, 150, 160, 200, 230, 255]])
    assert cell_regions(noisy).tolist() == [[0, 0, 1, 1, 1, 2, 2]]


def test_write_is_atomic_and_protects_inputs(tmp_path, rng):
    image = cell_image(rng)
    src = write_image(tmp_path / "in.png", image)
    before = src.read_bytes()
    with pytest.raises(ImageWriteError, match="overwrite an input"):
        write_image(tmp_path / "." / "in.png", image[::-1], protect=[src])
    with pytest.raises(ImageWriteError, match="overwrite an input"):  # the resolved-set form harmonize uses
        write_image(tmp_path / "in.png", image[::-1], protect={src.resolve(), tmp_path / "other.png"})
    assert src.read_bytes() == before
    with pytest.raises(ImageWriteError):
        write_image(tmp_path / "x.png", image.astype(np.float32))
    assert not (tmp_path / "x.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]  # no temporary files left behind


def test_list_images_sorted_and_filtered(tmp_path, rng):
    for name in ["b/2.PNG", "a/1.jpg", "a/notes.txt", ".hidden/3.png"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a/1.jpg", "b/2.PNG"]


def test_read_from_bytes_matches_pil(tmp_path, rng):
    image = cell_image(rng)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="BMP")
    (tmp_path / "x.bmp").write_bytes(buffer.getvalue())
    assert np.array_equal(read_image(tmp_path / "x.bmp"), image)
