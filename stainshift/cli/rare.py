"""``stainshift rare train|select|generate``: turn images of a common class of one domain into images of a rare
class (e.g. lymphocytes into blasts), choose the epoch that changes the cell's look without moving its outline,
and write the generated images as a class folder with a manifest."""

from __future__ import annotations

import argparse
import dataclasses

EXAMPLES = {
    "train": """examples:
  stainshift rare train --domain pbc --from lymphocyte --to erythroblast             # the cpu preset
  stainshift rare train --domain pbc --from lymphocyte --to erythroblast --preset small --epochs 4
  stainshift rare train --domain pbc --from lymphocyte --to erythroblast --resume    # continue exactly
The run goes to runs/<domain>.<from>_to_<domain>.<to>/classcyclegan/<run_id>/ (config.json, last.pt, epochs/,
samples/, manifest.json); each step draws one image of each class, so a rare class is seen as often as a common one.""",
    "select": """examples:
  stainshift rare select --domain pbc --from lymphocyte --to erythroblast
  stainshift rare select --domain pbc --from lymphocyte --to erythroblast --classifier pbc_resnet18
Scores every kept epoch on the 'from' class's validation images: cell size and outline (kept), nucleus-to-cytoplasm
ratio, nucleus texture and colour (moved toward the 'to' class), and with --classifier the 'to'-class probability.""",
    "generate": """examples:
  stainshift rare generate --domain pbc --from lymphocyte --to erythroblast --n 500 --out gen    # --epoch best
  stainshift rare generate --domain pbc --from lymphocyte --to erythroblast --n 50 --epoch 6 --out gen6
Writes OUT/<to>/*.png and OUT/manifest.json (source image, run, epoch, checkpoint hash, seed of every image); an
interrupted run resumes with the same arguments. OUT is a class folder a domain can point at.""",
}


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from stainshift.cli.harmonize import _epoch
    from stainshift.cli.train import add_training_options

    group = sub.add_parser("rare", help="rare-class images: translate one class of a domain into another",
                           description=__doc__, epilog="\n\n".join(EXAMPLES.values()),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, parents=[common], help=help_, description=help_, epilog=EXAMPLES[name],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--domain", required=True, help="the domain whose classes are translated")
        p.add_argument("--from", dest="source", required=True, metavar="CLASS", help="the common class translated")
        p.add_argument("--to", dest="target", required=True, metavar="CLASS", help="the rare class to make")
        p.add_argument("--method", default="classcyclegan", help="a between-class model (default classcyclegan)")
        return p

    p = action("train", "train a class-to-class CycleGAN inside one domain")
    add_training_options(p)  # --balanced changes nothing here: each step already draws one image of each class
    p.set_defaults(func=run_train)

    p = action("select", "score the kept epochs of a class translation and choose one")
    p.add_argument("--run-id", help="the run to score (default: the latest)")
    p.add_argument("--classifier", help="a classifier of the domain's classes (file, run folder or name): adds the "
                   "'to'-class probability, which then ranks the epochs that keep the cell")
    p.add_argument("--max-images", type=int, default=64, help="'from'-class validation images scored (default 64)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_select)

    p = action("generate", "write images of the 'to' class made from the 'from' class")
    p.add_argument("--n", type=int, required=True, help="images to generate")
    p.add_argument("--out", required=True, help="output folder (OUT/<to>/*.png, OUT/manifest.json)")
    p.add_argument("--epoch", type=_epoch, default="best", help="best (the selected one), last or a kept epoch number")
    p.add_argument("--run-id")
    p.add_argument("--split", default="train", choices=("train", "val"),
                   help="the 'from' images translated: train (default) or val (never test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_generate)


def _pair(args: argparse.Namespace):
    from stainshift.rare import ClassPair

    return ClassPair(args.domain, args.source, args.target)


def run_train(args: argparse.Namespace) -> int:
    from stainshift.cli.train import training_request
    from stainshift.project import load_project
    from stainshift.rare import check_method
    from stainshift.train.loop import train

    pair = _pair(args)
    check_method(args.method)
    project = load_project(args.project)
    pair.check(project)
    request = dataclasses.replace(training_request(args, args.domain, args.domain),
                                  classes=(pair.source, pair.target))
    result = train(project, request)
    if not args.quiet:
        kept = [e["epoch"] for e in result.manifest if "checkpoint" in e]
        print(f"trained {args.method} {pair.source} -> {pair.target} in {args.domain}: {result.epochs_done} epochs "
              f"in {result.run_dir}")
        print(f"kept epochs: {', '.join(map(str, kept)) or 'none'}; next: stainshift rare select --domain "
              f"{args.domain} --from {pair.source} --to {pair.target}")
    return 0


def run_select(args: argparse.Namespace) -> int:
    from stainshift.project import load_project
    from stainshift.rare import format_table, select_epoch

    selection = select_epoch(load_project(args.project), _pair(args), method=args.method, run_id=args.run_id,
                             classifier=args.classifier, max_images=args.max_images, device=args.device,
                             progress=not args.quiet)
    if not args.quiet:
        print(format_table(selection))
    print(f"selected epoch {selection.epoch} of {selection.run_dir.name} ({selection.rule}"
          f"{', FALLBACK' if selection.fallback else ''}): {selection.reason}")
    if not args.quiet:
        print(f"written: {selection.files['selected']}, {selection.files['plot']}; next: stainshift rare generate "
              f"--domain {args.domain} --from {args.source} --to {args.target} --n N --out DIR")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from stainshift.project import load_project
    from stainshift.rare import generate

    manifest = generate(load_project(args.project), _pair(args), args.n, args.out, method=args.method, epoch=args.epoch,
                        run_id=args.run_id, seed=args.seed, split=args.split, device=args.device,
                        progress=not args.quiet)
    config = manifest["config"]
    print(f"generated {len(manifest['images'])} {config['to']} images from {config['from']} ({config['method']} "
          f"epoch {config['epoch']} of {config['run']}) in {args.out}/{config['to']}/; manifest: "
          f"{args.out}/manifest.json")
    return 0
