"""Sharded harmonize: ``torchrun --nproc_per_node 2 -m stainshift harmonize`` (gloo, 2 CPU processes) writes the same
files and the same manifest as one process; the share of each rank, the merge, and a failing rank."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from stainshift.data.io import write_image
from stainshift.harmonize import HarmonizeRequest, harmonize
from stainshift.shard import merge_partials, partial_file, take
from stainshift.train.loop import TrainRequest, train

from .conftest import TINY_CYCLEGAN, cell_image, simulated_project

GLOO = dist.is_available() and dist.is_gloo_available()
needs_gloo = pytest.mark.skipif(not GLOO, reason="torch.distributed with the gloo backend is unavailable")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A simulated pair with a one-epoch tiny CycleGAN, and an input tree of 7 images of two sizes in two folders."""
    root = tmp_path_factory.mktemp("shard")
    project = simulated_project(root, per_class=3, split=(0.34, 0.33, 0.33))
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="r1", progress=False, track=False,
                                overrides={**TINY_CYCLEGAN, "epochs": 1, "keep_epochs": (1,)}))
    rng = np.random.default_rng(3)
    for i in range(7):
        write_image(root / "inputs" / f"slide{i % 2}" / f"cell_{i}.png", cell_image(rng, 40 if i % 3 else 48))
    return project


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _torchrun(project, out: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "stainshift", "harmonize", "--src", "hgtp", "--dst", "clinic", "--input",
               str(project.root / "inputs"), "--out", str(out), "--project", str(project.file), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=project.root)


def test_each_rank_takes_every_nth_file_of_the_sorted_list():
    files = [Path(f"d/{name}.png") for name in "gbeadfc"]
    shares = [take(files, rank, 3) for rank in range(3)]
    assert shares == [take(list(reversed(files)), rank, 3) for rank in range(3)]  # whatever order they came in
    together = [f for share in shares for f in share]
    assert sorted(together) == sorted(files) and len(set(together)) == 7  # disjoint, and all of them
    assert shares[0] == [Path("d/a.png"), Path("d/d.png"), Path("d/g.png")]
    assert take(files[:1], 1, 2) == []  # more ranks than files: an empty share


def test_shards_in_one_process_merge_into_the_single_run_s_manifest(project, tmp_path):
    request = HarmonizeRequest("hgtp", "clinic", method="reinhard", input=project.root / "inputs",
                               out=tmp_path / "out", progress=False)
    parts = [harmonize(project, dataclasses.replace(request, shard=(rank, 2))) for rank in (0, 1)]
    assert [p.n_images for p in parts] == [4, 3] and not (tmp_path / "out" / "manifest.csv").exists()
    assert parts[1].manifest == partial_file(tmp_path / "out", 1, 2) and parts[1].manifest.is_file()
    manifest, n_images, skipped = merge_partials(tmp_path / "out", 2)
    sharded = _files(tmp_path / "out")
    shutil.rmtree(tmp_path / "out")
    single = harmonize(project, request)
    assert (n_images, skipped) == (7, []) and manifest == single.manifest
    assert sharded == _files(tmp_path / "out") and len(sharded) == 8  # 7 images + manifest.csv, no partials


@needs_gloo
@pytest.mark.parametrize("method", ["reinhard", "cyclegan"])
def test_torchrun_two_processes_write_what_one_process_writes(project, tmp_path, method):
    out = tmp_path / "out"
    extra = ("--epoch", "1") if method == "cyclegan" else ()
    done = _torchrun(project, out, "--method", method, *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("harmonized 7 images") == 1, done.stdout  # rank 0 reports, for both
    sharded = _files(out)
    shutil.rmtree(out)
    harmonize(project, HarmonizeRequest("hgtp", "clinic", method=method, epoch=1, input=project.root / "inputs",
                                        out=out, progress=False))
    assert sharded == _files(out) and len(sharded) == 8  # the images and manifest.csv, byte for byte


@needs_gloo
def test_a_failing_rank_fails_the_run_and_nothing_is_merged(project, tmp_path):
    bad = project.root / "inputs" / "slide1" / "cell_9.png"
    bad.write_bytes(b"not an image")
    try:
        done = _torchrun(project, tmp_path / "out", "--method", "reinhard", "--quiet")
    finally:
        bad.unlink()
    assert done.returncode != 0
    assert "cell_9.png" in done.stderr and "--skip-bad" in done.stderr
    assert "another rank failed" in done.stderr
    assert not (tmp_path / "out" / "manifest.csv").exists()
