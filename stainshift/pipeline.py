"""Recipes: an ordered list of stainshift commands in a TOML file, run one after the other, resumable.

A recipe (``pipelines/*.toml``) is data, not code::

    name = "paper_blocks_1_2"
    description = "standardize a source hospital to the target's staining, select, classify, benchmark"

    [vars]                      # {name} in a command is replaced; `--set name=value` overrides
    src = "hgtp"
    dst = "clinic"

    [[steps]]
    name = "train-cyclegan"
    run = "train cyclegan --src {src} --dst {dst} --preset {preset}"
    outputs = ["runs/{src}_to_{dst}/cyclegan/*/last.pt"]   # optional: paths or globs under the project folder

Each step is the argument list of one ``stainshift`` command (``--project`` is added), run in the project's
folder (relative paths in a recipe are the project folder's). :func:`run_pipeline` runs them in order and records
each finished step in ``runs/pipelines/<name>-<hash>.json`` (one file per set of variable values): its command and
the modification times of the files its ``outputs`` matched. A step is **up to date**, and skipped, when it
finished before with the same command, every output pattern still matches and those files are unchanged, and no
step before it ran in this invocation (a step that ran may have changed what later ones read). The first failing
step stops the run with its name (an exception in a step too, recorded with its type and message); the next run
skips what finished and starts there. ``from_step`` re-runs that step and every later one (earlier steps run only
if they are not up to date); ``skip`` leaves steps out (the demo leaves out the colorization training).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shlex
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stainshift.atomic import atomic_write_text
from stainshift.errors import StainshiftError
from stainshift.project import Project

_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_STEP_KEYS = {"name", "run", "outputs", "description"}
_RECIPE_KEYS = {"name", "description", "vars", "steps"}


@dataclass(frozen=True)
class Step:
    name: str
    command: tuple[str, ...]        # the stainshift arguments, variables substituted
    outputs: tuple[str, ...] = ()   # path patterns relative to the project folder
    description: str = ""


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    variables: dict[str, str]
    steps: tuple[Step, ...]
    path: Path

    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]


def _substitute(text: str, variables: dict[str, str], where: str) -> str:
    missing = sorted({m for m in _VAR.findall(text) if m not in variables})
    if missing:
        raise StainshiftError(f"{where}: no value for {', '.join('{' + m + '}' for m in missing)}; add it under "
                              f"[vars] or pass --set {missing[0]}=VALUE")
    return _VAR.sub(lambda m: variables[m.group(1)], text)


def _resolve(variables: dict[str, str], path: Path) -> dict[str, str]:
    """Variables may name others (``out = "synth/{domain}"``): substitute until nothing changes."""
    for _ in range(len(variables) + 1):
        resolved = {k: _substitute(v, variables, f"{path} [vars] {k}") for k, v in variables.items()}
        if resolved == variables and not any(_VAR.search(v) for v in resolved.values()):
            return resolved
        variables = resolved
    raise StainshiftError(f"{path} [vars]: variables refer to each other in a cycle; give one of them a value")


def load_recipe(path: str | Path, overrides: dict[str, str] | None = None) -> Recipe:
    """Read and check a recipe; ``overrides`` replace its ``[vars]`` (unknown names are refused)."""
    path = Path(path)
    if not path.is_file():
        raise StainshiftError(f"{path}: no such recipe file; pass a pipelines/*.toml file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise StainshiftError(f"{path}: not valid TOML ({exc}); fix the file") from None
    unknown = sorted(set(raw) - _RECIPE_KEYS)
    if unknown:
        raise StainshiftError(f"{path}: unknown key(s) {', '.join(unknown)} (valid: {', '.join(sorted(_RECIPE_KEYS))})")
    variables = {str(k): str(v) for k, v in (raw.get("vars") or {}).items()}
    for key, value in (overrides or {}).items():
        if key not in variables:
            raise StainshiftError(f"--set {key}: {path} has no variable {key!r} (its variables: "
                                  f"{', '.join(sorted(variables)) or 'none'})")
        variables[key] = str(value)
    variables = _resolve(variables, path)
    steps, seen = [], set()
    for i, item in enumerate(raw.get("steps") or []):
        where = f"{path} step {i + 1}"
        if not isinstance(item, dict) or "name" not in item or "run" not in item:
            raise StainshiftError(f"{where}: a step needs a name and a run = \"COMMAND ...\"")
        bad = sorted(set(item) - _STEP_KEYS)
        if bad:
            raise StainshiftError(f"{where}: unknown key(s) {', '.join(bad)} (valid: {', '.join(sorted(_STEP_KEYS))})")
        name = str(item["name"])
        if name in seen:
            raise StainshiftError(f"{where}: a second step called {name!r}; give every step its own name")
        seen.add(name)
        command = tuple(shlex.split(_substitute(str(item["run"]), variables, f"{where} ({name})")))
        if not command:
            raise StainshiftError(f"{where} ({name}): empty command")
        if command[0] in ("stainshift", "pipeline"):
            raise StainshiftError(f"{where} ({name}): write the command without 'stainshift' (and no nested "
                                  "pipeline)")
        outputs = tuple(_substitute(str(o), variables, f"{where} ({name})") for o in item.get("outputs", []))
        steps.append(Step(name, command, outputs, str(item.get("description", ""))))
    if not steps:
        raise StainshiftError(f"{path}: no [[steps]]; a recipe lists at least one command")
    return Recipe(str(raw.get("name") or path.stem), str(raw.get("description", "")), variables, tuple(steps),
                  path.resolve())


# -- state ----------------------------------------------------------------------------------------------------------
def state_file(project: Project, recipe: Recipe) -> Path:
    """Where the recipe's finished steps are recorded, one file per set of variable values (``--set src=jtsc`` and
    ``--set src=bccd`` keep their own records)."""
    digest = hashlib.sha256(json.dumps(recipe.variables, sort_keys=True).encode()).hexdigest()[:8]
    return project.runs / "pipelines" / f"{recipe.name}-{digest}.json"


def _read_state(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"steps": {}}


def _matched(root: Path, patterns: Sequence[str]) -> dict[str, int] | None:
    """Every file the patterns match, with its mtime (ns); None when a pattern matches nothing."""
    files: dict[str, int] = {}
    for pattern in patterns:
        hits = sorted(glob.glob(str(root / pattern), recursive=True))
        if not hits:
            return None
        for hit in hits:
            files[str(Path(hit).relative_to(root))] = Path(hit).stat().st_mtime_ns
    return files


def _up_to_date(step: Step, done: dict[str, Any] | None, root: Path) -> tuple[bool, str]:
    if done is None:
        return False, "not run yet"
    if done.get("command") != list(step.command):
        return False, "its command changed"
    if not step.outputs:
        return True, "finished before (declares no outputs)"
    now = _matched(root, step.outputs)
    if now is None:
        return False, "an output is missing"
    if now != done.get("outputs"):
        return False, "its outputs changed since it finished"
    return True, "finished before, outputs unchanged"


@dataclass
class StepReport:
    name: str
    action: str          # "run", "skip", "left out", "failed", "would run", "would skip"
    why: str
    seconds: float = 0.0


@dataclass
class PipelineResult:
    recipe: Recipe
    steps: list[StepReport] = field(default_factory=list)
    state: Path | None = None

    @property
    def ok(self) -> bool:
        return not any(s.action == "failed" for s in self.steps)

    def to_text(self) -> str:
        width = max(len(s.name) for s in self.steps)
        lines = [f"pipeline {self.recipe.name} ({self.recipe.path}):"]
        lines += [f"  {s.name:<{width}}  {s.action:<10} {s.why}" + (f" [{s.seconds:.0f} s]" if s.seconds else "")
                  for s in self.steps]
        return "\n".join(lines)


def run_pipeline(recipe: Recipe, project: Project, *, from_step: str | None = None, skip: Sequence[str] = (),
                 dry_run: bool = False, quiet: bool = False,
                 runner: Callable[[list[str]], int] | None = None) -> PipelineResult:
    """Run (or, ``dry_run``, plan) the recipe's steps in ``project``; see the module docstring. ``runner`` runs
    one argument list (default: the stainshift command line, in this process) and returns its exit status."""
    names = recipe.step_names()
    for name in [from_step] * (from_step is not None) + list(skip):
        if name not in names:
            raise StainshiftError(f"{recipe.path}: no step called {name!r} (steps: {', '.join(names)})")
    if runner is None:
        from stainshift.cli.main import main as runner
    root = project.root
    path = state_file(project, recipe)
    state = _read_state(path)
    result = PipelineResult(recipe, state=path)
    forced = False
    ran = False
    for step in recipe.steps:
        forced = forced or step.name == from_step
        if step.name in skip:
            result.steps.append(StepReport(step.name, "left out", "--skip"))
            continue
        fresh, why = _up_to_date(step, state["steps"].get(step.name), root)
        if forced:
            fresh, why = False, f"--from {from_step}"
        elif ran and fresh:
            fresh, why = False, "a step before it ran"
        if dry_run:
            result.steps.append(StepReport(step.name, "would skip" if fresh else "would run", why))
            ran = ran or not fresh
            continue
        if fresh:
            result.steps.append(StepReport(step.name, "skip", why))
            continue
        argv = list(step.command)
        if "--project" not in argv:
            argv += ["--project", str(project.file)]
        if quiet and "--quiet" not in argv and "-q" not in argv:
            argv.append("--quiet")
        if not quiet:
            print(f"== {recipe.name}: {step.name}: stainshift {shlex.join(step.command)}", flush=True)
        start = time.perf_counter()
        saved_argv, saved_cwd = sys.argv, Path.cwd()
        sys.argv = ["stainshift", *argv]  # what the commands record as their command line
        os.chdir(root)  # relative paths in a recipe (and its outputs) are the project folder's
        failure = None
        try:
            status = int(runner(argv) or 0)
        except SystemExit as exc:  # argparse errors exit
            status = int(exc.code or 0) if isinstance(exc.code, int) else 2
        except Exception as exc:  # a bug or a crash in the step: the step is named, the run stops
            status, failure = 1, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            sys.argv = saved_argv
            os.chdir(saved_cwd)
        seconds = round(time.perf_counter() - start, 1)
        ran = True
        if status != 0:
            state["steps"].pop(step.name, None)
            _save(path, state)
            result.steps.append(StepReport(step.name, "failed", failure or f"exit status {status}", seconds))
            break
        outputs = _matched(root, step.outputs) if step.outputs else {}
        if outputs is None:
            missing = [p for p in step.outputs if not glob.glob(str(root / p), recursive=True)]
            result.steps.append(StepReport(step.name, "failed", f"finished but wrote no {missing[0]}", seconds))
            break
        state["steps"][step.name] = {"command": list(step.command), "outputs": outputs, "seconds": seconds,
                                     "finished": datetime.now(UTC).isoformat(timespec="seconds")}
        _save(path, state)
        result.steps.append(StepReport(step.name, "run", why, seconds))
    return result


def _save(path: Path, state: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(state, indent=2))
