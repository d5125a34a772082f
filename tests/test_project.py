"""The project file: parsing, validation, round trip, unknown domains."""

from __future__ import annotations

import pytest

from stainshift.errors import ProjectError
from stainshift.project import DomainConfig, Project, load_or_new_project, load_project, save_project


def test_round_trip_and_path_resolution(tmp_path):
    project = Project(file=tmp_path / "stainshift.toml", cell_diameter=64.0, seed=3, split=(0.4, 0.2, 0.4))
    project = project.with_domain(DomainConfig("clinic", "data/pbc", tmp_path, classes=("a", "b"),
                                               cell_diameter="auto"))
    project = project.with_domain(DomainConfig("hgtp", "data/jt", tmp_path, masks="data/jt/masks", cell_diameter=62.0,
                                               split=(0.5, 0.25, 0.25)))
    save_project(project)
    loaded = load_project(tmp_path / "stainshift.toml")
    assert loaded.domains["clinic"].classes == ("a", "b")
    assert loaded.domains["clinic"].cell_diameter == "auto"
    assert loaded.domains["hgtp"].masks_folder == (tmp_path / "data/jt/masks").resolve()
    assert loaded.split_for("hgtp") == (0.5, 0.25, 0.25) and loaded.split_for("clinic") == (0.4, 0.2, 0.4)
    assert loaded.seed == 3 and loaded.cell_diameter == 64.0
    # the embedded default: a sqlite store under runs/, made absolute relative to the project file
    assert loaded.tracking_uri == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}"
    assert loaded.runs == (tmp_path / "runs").resolve()


def test_loading_from_folder_and_fresh_project(tmp_path):
    fresh = load_or_new_project(tmp_path)
    assert fresh.domains == {} and fresh.file == (tmp_path / "stainshift.toml").resolve()
    with pytest.raises(ProjectError, match="no project file"):
        load_project(tmp_path)


def test_unknown_domain_lists_known_ones(tmp_path):
    project = Project(file=tmp_path / "stainshift.toml").with_domain(DomainConfig("clinic", "x", tmp_path))
    with pytest.raises(ProjectError) as err:
        project.domain("hgpt")
    assert "unknown domain 'hgpt'" in str(err.value) and "clinic" in str(err.value)
    assert "stainshift domains add hgpt" in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[project\nruns=1", "not valid TOML"),
        ("[domains.a]\nmasks='m'", "needs path"),
        ("[domains.a]\npath='p'\ncolour='x'", "unknown key"),
        ("[domains.a]\npath='p'\nsplit=[0.5, 0.5]", "three numbers"),
        ("[domains.a]\npath='p'\nsplit=[0.5, 0.6, 0.1]", "sum to 1"),
        ("[domains.a]\npath='p'\ncell_diameter=-3", "positive number"),
        ("[domains.1a]\npath='p'", "invalid domain name"),
        ("[project]\ncell_diameter='auto'", "common target"),
    ],
)
def test_malformed_project_files(tmp_path, text, message):
    (tmp_path / "stainshift.toml").write_text(text)
    with pytest.raises(ProjectError, match=message) as err:
        load_project(tmp_path / "stainshift.toml")
    assert "stainshift.toml" in str(err.value) or "invalid domain" in str(err.value)


def test_other_tracking_uris_are_kept(tmp_path):
    (tmp_path / "stainshift.toml").write_text('[project]\ntracking_uri = "http://127.0.0.1:5000"\n')
    assert load_project(tmp_path / "stainshift.toml").tracking_uri == "http://127.0.0.1:5000"
