"""Image grids: layout, labels, blanks, centre crops, and rows read from harmonized folders."""

from __future__ import annotations

import numpy as np

from stainshift.data.domains import Sample
from stainshift.data.io import read_image, write_image
from stainshift.grids import centre_crop, harmonized_row, image_grid


def _solid(value: int, h: int = 40, w: int = 40) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def test_grid_places_each_image_in_its_cell_and_leaves_none_blank():
    rows = [[_solid(0), _solid(100)], [None, _solid(200)]]
    grid = image_grid(rows, cell=32, gap=4)
    assert grid.shape == (2 * 36 + 4, 2 * 36 + 4, 3)
    assert (grid[4:36, 4:36] == 0).all() and (grid[4:36, 40:72] == 100).all()
    assert (grid[40:72, 4:36] == 255).all()  # None: white, nothing drawn
    assert (grid[40:72, 40:72] == 200).all()


def test_grid_labels_take_a_band_on_the_left_and_on_top():
    rows = [[_solid(128), _solid(128)]]
    plain = image_grid(rows, cell=32, gap=4)
    labelled = image_grid(rows, cell=32, gap=4, row_labels=["row"], label_width=60, col_labels=["a", "b"])
    assert labelled.shape == (plain.shape[0] + 20, plain.shape[1] + 60, 3)
    header, left = labelled[:20, 60:], labelled[20:, :60]
    assert (header < 128).any() and (left < 128).any()  # text drawn in both bands
    assert (labelled[24:56, 64:96] == 128).all()  # the first image moved by both bands


def test_centre_crop_takes_the_middle_and_keeps_short_axes_whole():
    image = np.zeros((60, 100, 3), np.uint8)
    image[20:40, 40:60] = 255
    crop = centre_crop(image, 20)
    assert crop.shape == (20, 20, 3) and (crop == 255).all()
    assert centre_crop(image, 80).shape == (60, 80, 3)


def test_harmonized_row_reads_the_same_keys_from_a_folder_and_crops_field_windows(tmp_path):
    field = np.full((80, 120, 3), 230, np.uint8)
    field[30:50, 50:70] = 40
    write_image(tmp_path / "src" / "neutrophil" / "f1.png", field)
    write_image(tmp_path / "out" / "neutrophil" / "f1.png", 255 - field)
    sample = Sample(path=tmp_path / "src" / "neutrophil" / "f1.png", label="neutrophil", key="neutrophil/f1.png",
                    mask=None, box=(40, 20, 40, 40))
    (original,) = harmonized_row([sample])
    (harmonized,) = harmonized_row([sample], tmp_path / "out")
    assert original.shape == harmonized.shape == (40, 40, 3)
    assert (original[10:30, 10:30] == 40).all() and (harmonized[10:30, 10:30] == 215).all()
    assert (read_image(tmp_path / "src" / "neutrophil" / "f1.png") == field).all()  # the input is untouched
