"""The command line as a user runs it: success and error paths, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import numpy as np
import pytest

from stainshift.cli.main import main
from stainshift.data.io import write_image

from .conftest import make_domain


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_domain(tmp_path / "data" / "clinic", {"neutrophil": 6, "lymphocyte": 6}, masks=True)
    make_domain(tmp_path / "data" / "hgtp", {"neutrophil": 4, "lymphocyte": 3}, seed=1, ext=".bmp")
    return tmp_path


def test_every_command_has_help_with_an_example(capsys):
    for argv in (["demo"], ["simulate"], ["domains"], ["domains", "add"], ["domains", "list"],
                 ["domains", "inspect"], ["domains", "split"], ["train"], ["select"], ["harmonize"],
                 ["classify"], ["classify", "train"], ["classify", "finetune"], ["classify", "eval"], ["benchmark"]):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        assert exit_.value.code == 0
        assert "example" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "stainshift", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("stainshift ")


def test_domains_add_list_split(project_dir, capsys):
    code, out, _ = run(capsys, "domains", "add", "clinic", "data/clinic")
    assert code == 0 and "12 images in 2 classes" in out and "12 with masks" in out  # masks/ found by itself
    code, out, _ = run(capsys, "domains", "add", "hgtp", "data/hgtp", "--split", "0.5,0.25,0.25",
                       "--cell-diameter", "30")
    assert code == 0
    saved = tomllib.loads((project_dir / "stainshift.toml").read_text())
    assert saved["domains"]["clinic"] == {"path": "data/clinic", "masks": "data/clinic/masks"}
    assert saved["domains"]["hgtp"]["split"] == [0.5, 0.25, 0.25] and saved["domains"]["hgtp"]["cell_diameter"] == 30
    code, out, _ = run(capsys, "domains", "list")
    assert code == 0 and "clinic" in out and "hgtp" in out and "12" in out
    code, out, _ = run(capsys, "domains", "split", "clinic")
    assert code == 0 and "runs/splits/clinic.csv" in out
    first = (project_dir / "runs" / "splits" / "clinic.csv").read_text()
    assert run(capsys, "domains", "split", "clinic", "--quiet")[1] == ""
    assert (project_dir / "runs" / "splits" / "clinic.csv").read_text() == first


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["domains", "add", "x", "nowhere"], "nowhere: no such folder"),
        (["domains", "add", "9x", "data/clinic"], "invalid domain name"),
        (["domains", "add", "x", "data/clinic", "--split", "0.5,0.5"], "three numbers"),
        (["domains", "add", "x", "data/clinic", "--cell-diameter", "big"], "number of pixels"),
        (["domains", "add", "x", "data/clinic", "--classes", "blast"], "lists classes ['blast']"),
        (["domains", "inspect", "hgpt"], "unknown domain 'hgpt'"),
        (["domains", "split", "hgpt"], "unknown domain 'hgpt'"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(project_dir, capsys, argv, message):
    assert run(capsys, "domains", "add", "clinic", "data/clinic", "-q")[0] == 0
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_add_twice_needs_force(project_dir, capsys):
    assert run(capsys, "domains", "add", "clinic", "data/clinic", "-q")[0] == 0
    code, _, err = run(capsys, "domains", "add", "clinic", "data/hgtp")
    assert code == 2 and "--force" in err
    assert run(capsys, "domains", "add", "clinic", "data/hgtp", "--force", "-q")[0] == 0


def test_no_project_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "domains", "list")
    assert code == 2 and "no project file" in err


def test_empty_domain_folder(project_dir, capsys):
    (project_dir / "empty" / "neutrophil").mkdir(parents=True)
    code, _, err = run(capsys, "domains", "add", "e", "empty")
    assert code == 2 and "has no images" in err and "empty" in err


def test_split_with_corrupt_file_then_skip_bad(project_dir, capsys):
    run(capsys, "domains", "add", "hgtp", "data/hgtp", "-q")
    bad = project_dir / "data" / "hgtp" / "neutrophil" / "cut.bmp"
    write_image(bad, np.full((30, 30, 3), 200, np.uint8))
    bad.write_bytes(bad.read_bytes()[:100])
    code, _, err = run(capsys, "domains", "split", "hgtp")
    assert code == 2 and "cut.bmp" in err and "--skip-bad" in err and err.count("\n") == 1
    code, _, err = run(capsys, "domains", "split", "hgtp", "--skip-bad")
    assert code == 0 and "cut.bmp" in err and "warning" in err


def test_simulate_command(tmp_path, capsys):
    code, out, _ = run(capsys, "simulate", "--out", str(tmp_path / "sim"), "--hospitals", "clinic,site3",
                       "--per-class", "1", "--size", "32")
    assert code == 0 and "2 hospitals" in out
    assert (tmp_path / "sim" / "pairs.csv").exists() and (tmp_path / "sim" / "site3" / "lymphocyte").is_dir()
    code, _, err = run(capsys, "simulate", "--out", str(tmp_path / "bad"), "--per-class", "0")
    assert code == 2 and "per" in err and err.count("\n") == 1 and not (tmp_path / "bad").exists()
    code, _, err = run(capsys, "simulate", "--out", str(tmp_path / "bad"), "--hospitals", "clinic,mars")
    assert code == 2 and "mars" in err


def test_demo_command_refuses_a_file_as_workdir(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, _, err = run(capsys, "demo", "--quick", "--workdir", str(tmp_path / "f"))
    assert code == 2 and "is a file" in err


def test_free_cores_follows_the_load_and_respects_the_user(monkeypatch):
    import os

    from stainshift.cli.main import free_cores

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert free_cores() == cores
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 3.0, 0.0, 0.0))
    assert free_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert free_cores() is None
