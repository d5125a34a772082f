"""Domains and splits: scanning, stratification, stability, small classes, staleness, bad files."""

from __future__ import annotations

import pandas as pd
import pytest

from stainshift.data.domains import scan_domain
from stainshift.data.splits import _split_sizes, domain_split, make_split, samples_in, split_file
from stainshift.errors import DataError
from stainshift.project import DomainConfig, Project

from .conftest import make_domain


def _project(tmp_path, **domain_kw) -> Project:
    return Project(file=tmp_path / "stainshift.toml").with_domain(DomainConfig("site", "site", tmp_path, **domain_kw))


def test_scan_finds_classes_masks_and_ignores_masks_folder(tmp_path):
    make_domain(tmp_path / "site", {"neutrophil": 3, "lymphocyte": 2}, masks=True)
    (tmp_path / "site" / "notes.txt").write_text("not an image")
    samples = scan_domain(_project(tmp_path, masks="site/masks").domain("site"))
    assert sorted({s.label for s in samples}) == ["lymphocyte", "neutrophil"]  # "masks" is not a class
    assert all(s.mask is not None and s.mask.name == s.path.with_suffix(".png").name for s in samples)
    subset = scan_domain(_project(tmp_path, classes=("neutrophil",)).domain("site"))
    assert {s.label for s in subset} == {"neutrophil"} and all(s.mask is None for s in subset)


def test_scan_errors_name_the_folder_and_fix(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_domain(_project(tmp_path).domain("site"))
    (tmp_path / "site" / "neutrophil").mkdir(parents=True)
    with pytest.raises(DataError, match="has no images") as err:
        scan_domain(_project(tmp_path).domain("site"))
    assert str((tmp_path / "site").resolve()) in str(err.value)
    with pytest.raises(DataError, match=r"lists classes \['blast'\]"):
        scan_domain(_project(tmp_path, classes=("blast",)).domain("site"))


def test_split_is_stratified_and_seeded(tmp_path):
    make_domain(tmp_path / "site", {"a": 20, "b": 10})
    samples = scan_domain(_project(tmp_path).domain("site"))
    frame = make_split(samples, (0.6, 0.2, 0.2), seed=0)
    counts = frame.groupby(["label", "split"]).size().to_dict()
    assert counts == {("a", "train"): 12, ("a", "val"): 4, ("a", "test"): 4,
                      ("b", "train"): 6, ("b", "val"): 2, ("b", "test"): 2}
    assert frame.equals(make_split(samples, (0.6, 0.2, 0.2), seed=0))
    assert not frame.equals(make_split(samples, (0.6, 0.2, 0.2), seed=1))
    # adding a class does not move any image of the others
    make_domain(tmp_path / "site", {"c": 5}, seed=1)
    bigger = make_split(scan_domain(_project(tmp_path).domain("site")), (0.6, 0.2, 0.2), seed=0)
    assert bigger[bigger.label != "c"].reset_index(drop=True).equals(frame)


@pytest.mark.parametrize(("n", "expected"), [(1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (4, (2, 1, 1)),
                                             (10, (6, 2, 2))])
def test_small_class_sizes(n, expected):
    assert _split_sizes(n, (0.6, 0.2, 0.2)) == expected


def test_tiny_classes_warn(tmp_path):
    make_domain(tmp_path / "site", {"a": 6, "rare": 1})
    with pytest.warns(UserWarning, match="'rare' has only 1"):
        frame = make_split(scan_domain(_project(tmp_path).domain("site")), (0.6, 0.2, 0.2), seed=0)
    assert frame.loc[frame.label == "rare", "split"].tolist() == ["train"]


def test_saved_split_is_reused_and_detects_changes(tmp_path):
    make_domain(tmp_path / "site", {"a": 8, "b": 8})
    project = _project(tmp_path)
    first = domain_split(project, "site")
    path = split_file(project, "site")
    assert path.exists() and pd.read_csv(path).equals(first)
    stamp = path.stat().st_mtime_ns
    assert domain_split(project, "site").equals(first) and path.stat().st_mtime_ns == stamp
    assert [s.key for s in samples_in(project, "site", "test")] == first.loc[first.split == "test", "key"].tolist()
    make_domain(tmp_path / "site", {"a": 9})  # one new image in class a
    with pytest.raises(DataError, match=r"1 new, 0 missing.*--refresh"):
        domain_split(project, "site")
    assert len(domain_split(project, "site", refresh=True)) == 17


def test_bad_files_stop_the_split_unless_skipped(tmp_path):
    make_domain(tmp_path / "site", {"a": 5, "b": 5})
    bad = tmp_path / "site" / "a" / "broken.png"
    bad.write_bytes(b"")
    project = _project(tmp_path)
    with pytest.raises(DataError) as err:
        domain_split(project, "site")
    assert "broken.png" in str(err.value) and "--skip-bad" in str(err.value)
    assert not split_file(project, "site").exists()
    with pytest.warns(UserWarning, match="broken.png"):
        frame = domain_split(project, "site", skip_bad=True)
    assert "a/broken.png" not in set(frame.key) and len(frame) == 10
    assert domain_split(project, "site").equals(frame)  # the excluded file does not make the split stale
    assert bad.read_bytes() == b""  # inputs are never modified
