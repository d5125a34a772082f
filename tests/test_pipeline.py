"""Recipes (pipelines/*.toml) and `stainshift pipeline run`: order, skipping what is up to date, stopping at a
failure and resuming there, --from / --skip / --dry-run, and every shipped recipe parsing as real commands."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from stainshift.cli.main import build_parser, main
from stainshift.errors import StainshiftError
from stainshift.pipeline import load_recipe, run_pipeline, state_file
from stainshift.project import Project, load_project, save_project

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"

RECIPE = """
name = "small"
description = "simulate a hospital, name it, split it"

[vars]
out = "sim"
domain = "clinic"
data = "{out}/{domain}"

[[steps]]
name = "simulate"
run = "simulate --out {out} --hospitals {domain} --per-class 3 --size 32"
outputs = ["{out}/pairs.csv"]

[[steps]]
name = "add"
run = "domains add {domain} {data} --force"
outputs = ["stainshift.toml"]

[[steps]]
name = "split"
run = "domains split {domain}"
outputs = ["runs/splits/{domain}.csv"]
"""


@pytest.fixture
def setup(tmp_path) -> tuple[Path, Path]:
    save_project(Project(file=tmp_path / "stainshift.toml"))
    recipe = tmp_path / "small.toml"
    recipe.write_text(RECIPE)
    return tmp_path, recipe


def _run(root: Path, recipe: Path, *args: str) -> int:
    return main(["pipeline", "run", str(recipe), "--project", str(root), "--quiet", *args])


def _actions(root: Path, recipe: Path, **kw) -> list[str]:
    result = run_pipeline(load_recipe(recipe, kw.pop("overrides", None)), load_project(root), quiet=True, **kw)
    return [s.action for s in result.steps]


def test_a_recipe_runs_in_order_then_skips_what_is_up_to_date(setup, capsys):
    root, recipe = setup
    assert _run(root, recipe) == 0
    assert "clinic" in load_project(root).domains and (root / "runs" / "splits" / "clinic.csv").exists()
    state = json.loads(state_file(load_project(root), load_recipe(recipe)).read_text())
    assert list(state["steps"]) == ["simulate", "add", "split"]
    assert state["steps"]["simulate"]["command"][:3] == ["simulate", "--out", "sim"]
    assert _actions(root, recipe) == ["skip", "skip", "skip"]
    # an output changed after its step finished: that step and every later one run again
    time.sleep(0.01)
    os.utime(root / "stainshift.toml")
    assert _actions(root, recipe) == ["skip", "run", "run"]


def test_a_failing_step_stops_the_run_with_its_name_and_the_next_run_resumes_there(setup, capsys):
    root, recipe = setup
    recipe.write_text(RECIPE.replace("domains split {domain}", "domains split {domain}_typo"))
    assert _run(root, recipe) == 2
    err = capsys.readouterr().err
    assert "step 'split' of small failed" in err and "resumes at 'split'" in err
    state = json.loads(state_file(load_project(root), load_recipe(recipe)).read_text())
    assert list(state["steps"]) == ["simulate", "add"]
    recipe.write_text(RECIPE)  # fixed: the finished steps are skipped, the failed one runs
    assert _actions(root, recipe) == ["skip", "skip", "run"]


def test_from_skip_and_dry_run(setup):
    root, recipe = setup
    assert _actions(root, recipe, dry_run=True) == ["would run"] * 3
    assert not (root / "sim").exists() and not state_file(load_project(root), load_recipe(recipe)).exists()
    assert _actions(root, recipe, skip=["split"]) == ["run", "run", "left out"]
    assert _actions(root, recipe) == ["skip", "skip", "run"]
    assert _actions(root, recipe, from_step="add") == ["skip", "run", "run"]
    assert _actions(root, recipe, dry_run=True) == ["would skip"] * 3
    # another value for a variable changes the commands: they are not up to date
    assert _actions(root, recipe, dry_run=True, overrides={"out": "sim2"})[0] == "would run"


@pytest.mark.parametrize("text, message", [
    ('name = "x"\n[[steps]]\nname = "a"\nrun = "simulate --out {nowhere}"', "no value for {nowhere}"),
    ('name = "x"\n[[steps]]\nname = "a"\nrun = "simulate"\n[[steps]]\nname = "a"\nrun = "simulate"', "second step"),
    ('name = "x"\n[[steps]]\nname = "a"\nrun = "simulate"\nwhen = "always"', "unknown key(s) when"),
    ('name = "x"\n[vars]\na = "{b}"\nb = "{a}"\n[[steps]]\nname = "s"\nrun = "simulate"', "cycle"),
    ('name = "x"\n[[steps]]\nname = "a"\nrun = "stainshift simulate"', "without 'stainshift'"),
    ('name = "x"', "no [[steps]]"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(StainshiftError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
                       .replace("{", r"\{").replace("}", r"\}")):
        load_recipe(path)


def test_set_refuses_a_variable_the_recipe_does_not_have(setup):
    _, recipe = setup
    with pytest.raises(StainshiftError, match="no variable 'dst'"):
        load_recipe(recipe, {"dst": "x"})


@pytest.mark.parametrize("path", sorted(PIPELINES.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_is_a_list_of_valid_stainshift_commands(path):
    recipe = load_recipe(path)
    parser = build_parser()
    for step in recipe.steps:
        args = parser.parse_args([*step.command, "--project", "x"])  # argparse exits on an unknown option
        assert callable(args.func), step.name
    assert {p.stem for p in PIPELINES.glob("*.toml")} >= {"paper_blocks_1_2", "paper_block_3", "mask_to_image"}


def test_a_crash_in_a_step_and_a_missing_output_are_named_failures(setup):
    root, recipe = setup

    def crash(argv: list[str]) -> int:
        raise RuntimeError("disk full\nmore lines")

    result = run_pipeline(load_recipe(recipe), load_project(root), quiet=True, runner=crash)
    assert [(s.name, s.action, s.why) for s in result.steps] == [("simulate", "failed", "RuntimeError: disk full")]
    recipe.write_text(RECIPE.replace('outputs = ["{out}/pairs.csv"]', 'outputs = ["{out}/nothing.csv"]'))
    result = run_pipeline(load_recipe(recipe), load_project(root), quiet=True)
    assert (result.steps[0].action, result.steps[0].why) == ("failed", "finished but wrote no sim/nothing.csv")


def test_each_set_of_variables_keeps_its_own_record(setup, capsys):
    root, recipe = setup
    assert _run(root, recipe) == 0
    assert _run(root, recipe, "--set", "out=other") == 0
    # the first set's simulation is still up to date; the project file it wrote has changed since (the other set
    # named its own folder), so its later steps run again
    assert _actions(root, recipe) == ["skip", "run", "run"]
    assert len(list((root / "runs" / "pipelines").glob("small-*.json"))) == 2
    assert main(["pipeline", "show", str(recipe), "--set", "out=x"]) == 0
    out = capsys.readouterr().out
    assert "1. simulate: stainshift simulate --out x --hospitals clinic" in out and "outputs: x/pairs.csv" in out
    assert main(["pipeline", "run", str(recipe), "--project", str(root), "--set", "nope=1"]) == 2
    assert "has no variable 'nope'" in capsys.readouterr().err
