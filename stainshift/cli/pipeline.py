"""``stainshift pipeline run|show RECIPE``: run an end-to-end recipe (pipelines/*.toml: an ordered list of stainshift
commands) in a project, skipping the steps that are up to date, stopping at the first failure and resuming there."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  stainshift pipeline show pipelines/paper_blocks_1_2.toml                   # its steps and variables
  stainshift pipeline run pipelines/paper_blocks_1_2.toml --dry-run          # what would run, what is up to date
  stainshift pipeline run pipelines/paper_blocks_1_2.toml --set src=bccd --set dst=pbc
  stainshift pipeline run pipelines/paper_blocks_1_2.toml --from benchmark  # run again from that step on
Each finished step is recorded in runs/pipelines/<recipe>-<hash of the variables>.json; a failed step is named
and the next run starts there. Commands run in the project's folder."""


def _assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set {text!r}: use NAME=VALUE, e.g. --set src=hgtp")
    return key.strip(), value


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("pipeline", help="run an end-to-end recipe (pipelines/*.toml), resumable",
                           description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_ in (("run", "run the recipe's steps in order"), ("show", "list the recipe's steps")):
        p = actions.add_parser(name, parents=[common], help=help_, description=help_, epilog=EXAMPLE,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("recipe", help="a recipe file, e.g. pipelines/paper_blocks_1_2.toml")
        p.add_argument("--set", dest="variables", action="append", default=[], type=_assignment,
                       metavar="NAME=VALUE", help="override a variable of the recipe's [vars] (repeatable)")
        if name == "run":
            p.add_argument("--from", dest="from_step", metavar="STEP", help="run again from this step on")
            p.add_argument("--skip", action="append", default=[], metavar="STEP", help="leave a step out")
            p.add_argument("--dry-run", action="store_true", help="say what would run and what is up to date")
            p.set_defaults(func=run)
        else:
            p.set_defaults(func=show)


def show(args: argparse.Namespace) -> int:
    import shlex

    from stainshift.pipeline import load_recipe

    recipe = load_recipe(args.recipe, dict(args.variables))
    print(f"{recipe.name}: {recipe.description}")
    print("variables: " + ", ".join(f"{k}={v}" for k, v in recipe.variables.items()))
    for i, step in enumerate(recipe.steps, 1):
        print(f"{i:2d}. {step.name}: stainshift {shlex.join(step.command)}")
        if step.outputs:
            print(f"      outputs: {', '.join(step.outputs)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from stainshift.errors import StainshiftError
    from stainshift.pipeline import load_recipe, run_pipeline
    from stainshift.project import load_project

    recipe = load_recipe(args.recipe, dict(args.variables))
    result = run_pipeline(recipe, load_project(args.project), from_step=args.from_step, skip=args.skip,
                          dry_run=args.dry_run, quiet=args.quiet)
    print(result.to_text())
    if not result.ok:
        failed = next(s for s in result.steps if s.action == "failed")
        raise StainshiftError(f"step '{failed.name}' of {recipe.name} failed ({failed.why}); fix what its message "
                              f"says and run the same command again: it resumes at '{failed.name}'")
    return 0
