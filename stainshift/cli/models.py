"""``stainshift models register|list``: selected harmonizers in the mlflow model registry (the project's
tracking URI), for ``stainshift harmonize --model models:/NAME/VERSION``."""

from __future__ import annotations

import argparse

EXAMPLES = {
    "register": """examples:
  stainshift models register --src hgtp --dst clinic                      # the selected epoch (selected.json)
  stainshift models register --src hgtp --dst clinic --rule label-free    # the newest label-free selection
  stainshift models register --src hgtp --dst clinic --method cut --epoch 5 --run-id cpu-s0-20250101-120000
Registers the epoch file under stainshift-<src>_to_<dst>-<method> with its selection scores and provenance as tags
(a checkpoint already registered keeps its version). then:
  stainshift harmonize --model models:/stainshift-hgtp_to_clinic-cyclegan/1 --input new_smears/ --out out/""",
    "list": """examples:
  stainshift models list
  stainshift models list --name stainshift-hgtp_to_clinic-cyclegan
Browse them with `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` in the project's folder (the default
tracking URI; use the project file's tracking_uri otherwise).""",
}


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from stainshift.cli.harmonize import _epoch
    from stainshift.rules import RULES

    group = sub.add_parser("models", help="register selected harmonizers in the mlflow model registry, list them",
                           description=__doc__, epilog="\n\n".join(EXAMPLES.values()),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("register", parents=[common], help="register the selected epoch of a training run",
                           description="register the selected epoch of a training run", epilog=EXAMPLES["register"],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="source domain")
    p.add_argument("--dst", required=True, help="target domain")
    p.add_argument("--method", default="cyclegan", help="a learned method (default cyclegan)")
    p.add_argument("--epoch", type=_epoch, default="best", help="best (default: the selected epoch), last, or N")
    p.add_argument("--rule", choices=RULES, help="with --epoch best: the newest selection by this rule")
    p.add_argument("--run-id", help="which training run (default: the latest)")
    p.set_defaults(func=run_register)

    p = actions.add_parser("list", parents=[common], help="list the registered harmonizers",
                           description="list the registered harmonizers", epilog=EXAMPLES["list"],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", help="one registered model only")
    p.set_defaults(func=run_list)


def run_register(args: argparse.Namespace) -> int:
    from stainshift.model_registry import register
    from stainshift.project import load_project

    version, new = register(load_project(args.project), args.src, args.dst, method=args.method, epoch=args.epoch,
                            rule=args.rule, run_id=args.run_id)
    what = "registered" if new else "already registered"
    print(f"{what}: {version.uri} (epoch {version.epoch} of {version.tags.get('stainshift.run_id')}, rule "
          f"{version.rule}, checkpoint {version.checkpoint})")
    if not args.quiet:
        print(f"next: stainshift harmonize --model {version.uri} --input DIR --out DIR")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from stainshift.model_registry import list_models
    from stainshift.project import load_project

    project = load_project(args.project)
    found = list_models(project, args.name)
    if not found:
        print(f"no harmonizers registered in {project.tracking_uri}; register one with `stainshift models register "
              "--src S --dst D`")
        return 0
    for v in found:
        scores = " ".join(f"{k} {value:.3g}" for k, value in v.scores.items())
        print(f"{v.uri}  {v.src} -> {v.dst}  {v.method} epoch {v.epoch} of {v.tags.get('stainshift.run_id')}  "
              f"rule {v.rule}  checkpoint {v.checkpoint}  {scores}".rstrip())
    return 0
