"""``stainshift classify train|finetune|eval``: the ResNet classifiers that measure what harmonization gains."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ARCHS = ("resnet18", "resnet34")  # = stainshift.classify.models.ARCHS (kept in sync by a test)
NORMS = ("batch", "group", "frozen-batch")  # = stainshift.classify.models.NORMS
LOSSES = ("ce", "focal")  # = stainshift.classify.train.LOSSES
AUGMENTS = ("hed", "lab")  # = stainshift.classify.stain_augment.AUGMENTS
KEEPS = ("best", "last")  # = stainshift.classify.train.KEEPS
SPLITS = ("train", "val", "test", "all")

EXAMPLES = {
    "train": """examples:
  stainshift classify train --domain clinic --arch resnet34 --loss focal
  stainshift classify train --domain clinic --norm batch --epochs 20 --size 96 --balanced
  stainshift classify train --domain clinic --stain-augment hed        # HED jitter, the cheap rival to harmonizing
  stainshift classify train --domain clinic --weights resnet18_imagenet.pth --lr-find
Fits on the domain's train split, reports its val split each epoch, keeps the last epoch; writes
runs/classifiers/<name>/ (model.pt, config.json, history.csv).
Default name: <domain>-<arch>[-focal][-<norm>, unless batch][-hed|-lab], e.g. clinic-resnet18-group.""",
    "finetune": """examples:
  stainshift classify finetune --model clinic-resnet34-focal-group --domain hgtp --epochs 5
  stainshift classify finetune --model runs/classifiers/clinic-resnet18-group/model.pt --domain hgtp --keep last
Continues training on the domain's train split (one-cycle) and keeps the epoch with the best accuracy on its val
split (--keep last: the last epoch); the model keeps its classes, images of other classes are left out.
Default name: <model name>-ft-<domain>.""",
    "eval": """examples:
  stainshift classify eval --model clinic-resnet18-group --domain hgtp            # raw hgtp test split
  stainshift classify eval --model clinic-resnet18-group --domain hgtp --method cyclegan --epoch 3
  stainshift classify eval --model clinic-resnet18-group --domain hgtp --harmonized out/ --split all
--method reads runs/<domain>_to_<model's domain>/<method>/harmonized/ (written by `stainshift harmonize`).
Writes metrics.json, confusion.csv, confusion.png and predictions.csv to --out
(default: runs/classifiers/<model>/eval/<domain>-<split>[-<method>]).""",
}


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from stainshift.models.registry import names

    group = sub.add_parser("classify", help="train, fine-tune and evaluate ResNet cell classifiers",
                           description=__doc__, epilog="example: stainshift classify train --domain clinic",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[common], help=help_, description=help_, epilog=EXAMPLES[name],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)

    def fitting(p: argparse.ArgumentParser, epochs: int) -> None:
        p.add_argument("--epochs", type=int, default=epochs, help=f"one-cycle epochs (default {epochs})")
        p.add_argument("--lr", type=float, help="maximum learning rate (default 1e-3, or --lr-find's suggestion)")
        p.add_argument("--lr-find", action="store_true", help="pick the learning rate with fastai's lr_find")
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--balanced", action="store_true", help="class-balanced sampling (weighted sampler)")
        p.add_argument("--no-augment", action="store_true", help="no flips / 90-degree rotations")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--name", help="run folder name under runs/classifiers/")
        p.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
        p.add_argument("--no-track", action="store_true", help="do not log to mlflow")

    p = action("train", "train a ResNet classifier on one domain")
    p.add_argument("--domain", required=True, help="domain to train on (its saved train / val split)")
    p.add_argument("--arch", default="resnet18", choices=ARCHS)
    p.add_argument("--loss", default="ce", choices=LOSSES, help="cross-entropy or focal loss (gamma --gamma)")
    p.add_argument("--gamma", type=float, default=2.0, help="focal loss gamma (default 2)")
    p.add_argument("--norm", default="group", choices=NORMS,
                   help="normalization layers (default group: GroupNorm, which survives stain shift)")
    p.add_argument("--size", type=int, default=96, help="input size in px after scale harmonization (default 96)")
    p.add_argument("--weights", type=Path, help="local pretrained weights (state dict); nothing is downloaded")
    p.add_argument("--stain-augment", choices=AUGMENTS,
                   help="stain augmentation before the flips: hed (HED jitter, Tellez 2018) or lab (L*a*b* "
                        "statistics drawn from the domain's own images, RandStainNA)")
    fitting(p, 10)
    p.set_defaults(func=run_train)

    p = action("finetune", "continue training a classifier on another domain (one-cycle)")
    p.add_argument("--model", required=True, help="classifier run name or model.pt path")
    p.add_argument("--domain", required=True, help="domain to fine-tune on (its train / val split)")
    p.add_argument("--loss", choices=LOSSES, help="default: the model's own loss")
    p.add_argument("--keep", default="best", choices=KEEPS,
                   help="save the epoch with the best val accuracy (default) or the last one")
    fitting(p, 5)
    p.set_defaults(func=run_finetune)

    p = action("eval", "accuracy, macro-F1, recall and confusion matrix on a domain's split")
    p.add_argument("--model", required=True, help="classifier run name or model.pt path")
    p.add_argument("--domain", required=True, help="domain whose images (and labels) are evaluated")
    p.add_argument("--split", default="test", choices=SPLITS, help="which split (default test)")
    p.add_argument("--method", choices=names(images_only=True),
                   help="evaluate the images harmonized with this method instead of the raw ones")
    p.add_argument("--epoch", type=int, help="with --method: require the harmonized folder to hold this epoch")
    p.add_argument("--dst", help="with --method: the target domain (default: the domain the model was trained on)")
    p.add_argument("--harmonized", type=Path, metavar="DIR", help="read the split's images from DIR instead")
    p.add_argument("--out", type=Path, help="report folder (default under the model's run folder)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples for the 95%% CIs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=run_eval)


def _fitting_options(args: argparse.Namespace) -> dict:
    return {"epochs": args.epochs, "lr": args.lr, "lr_find": args.lr_find, "batch_size": args.batch_size,
            "balanced": args.balanced, "augment": not args.no_augment, "seed": args.seed, "name": args.name,
            "overwrite": args.overwrite, "device": args.device, "workers": args.workers,
            "progress": not args.quiet, "track": not args.no_track}


def _done(path: Path, quiet: bool, domain: str) -> None:
    if quiet:
        return
    import json

    config = json.loads((path.parent / "config.json").read_text())
    final = config["final"]
    kept = f", kept epoch {config['selected_epoch']}" if config.get("keep") == "best" else ""
    print(f"trained {config['name']} on {domain} ({config['epochs']} epochs, lr {config['lr_used']:.3g}{kept}): "
          f"val accuracy {final['valid_accuracy']:.3f}, macro-F1 {final['valid_macro_f1']:.3f} -> {path}")
    excluded = config.get("excluded_classes") or {}
    if excluded:
        print("left out (classes the model lacks): " + ", ".join(f"{c} ({n})" for c, n in sorted(excluded.items())))
    print(f"next: stainshift classify eval --model {config['name']} --domain {domain}")


def run_train(args: argparse.Namespace) -> int:
    from stainshift.classify.train import ClassifierRequest, train_classifier
    from stainshift.project import load_project

    request = ClassifierRequest(domain=args.domain, arch=args.arch, loss=args.loss, gamma=args.gamma,
                                norm=args.norm, size=args.size, weights=args.weights,
                                stain_augment=args.stain_augment, **_fitting_options(args))
    path = train_classifier(load_project(args.project), request)
    _done(path, args.quiet, args.domain)
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from stainshift.classify.train import finetune_classifier
    from stainshift.project import load_project
    from stainshift.runs import find_classifier

    project = load_project(args.project)
    model = find_classifier(project.runs, args.model)
    path = finetune_classifier(project, model, args.domain, loss=args.loss, keep=args.keep,
                               **_fitting_options(args))
    _done(path, args.quiet, args.domain)
    return 0


def _harmonized_folder(project, args: argparse.Namespace, model_domain: str | None) -> Path | None:
    """The folder to read for --method / --harmonized; a one-line error when it is not there yet."""
    import csv

    from stainshift.errors import StainshiftError
    from stainshift.runs import harmonized_dir

    if args.harmonized is not None:
        if args.method or args.epoch is not None:
            raise StainshiftError("pass either --harmonized DIR or --method [--epoch], not both")
        if not args.harmonized.is_dir():
            raise StainshiftError(f"{args.harmonized}: --harmonized folder not found")
        return args.harmonized.resolve()
    if args.method is None:
        if args.epoch is not None or args.dst:
            raise StainshiftError("--epoch and --dst go with --method (e.g. --method cyclegan --epoch 3)")
        return None
    dst = args.dst or model_domain
    if not dst:
        raise StainshiftError(f"{args.model}: the classifier does not record its training domain; pass --dst")
    project.domain(dst)
    folder = harmonized_dir(project, args.domain, dst, args.method)
    epoch = f" --epoch {args.epoch}" if args.epoch is not None else ""
    command = f"`stainshift harmonize --src {args.domain} --dst {dst} --method {args.method}{epoch}`"
    if not folder.is_dir():
        raise StainshiftError(f"{folder}: no harmonized images; run {command} first")
    if args.epoch is not None:
        manifest = folder / "manifest.csv"
        epochs = set()
        if manifest.is_file():
            with open(manifest, newline="", encoding="utf-8") as fh:
                epochs = {row.get("epoch", "") for row in csv.DictReader(fh)}
        if epochs != {str(args.epoch)}:
            held = ", ".join(sorted(e or "none" for e in epochs)) or "unknown"
            raise StainshiftError(f"{folder} holds {args.method} epoch {held}, not {args.epoch}; run {command} first")
    return folder


def run_eval(args: argparse.Namespace) -> int:
    from stainshift.classify.evaluate import evaluate, write_report
    from stainshift.classify.models import load_classifier
    from stainshift.device import resolve_device
    from stainshift.errors import StainshiftError
    from stainshift.project import load_project
    from stainshift.runs import find_classifier

    project = load_project(args.project)
    project.domain(args.domain)
    if args.boot < 1 or args.batch_size < 1:
        raise StainshiftError("--boot and --batch-size must be >= 1")
    path = find_classifier(project.runs, args.model)
    clf = load_classifier(path, resolve_device(args.device))
    trained_on = clf.config.get("trained_on") or [clf.config.get("domain")]
    root = _harmonized_folder(project, args, trained_on[0])
    split = None if args.split == "all" else args.split
    report = evaluate(clf, project, args.domain, split, root, batch_size=args.batch_size, n_boot=args.boot,
                      seed=args.seed, progress=not args.quiet)
    report.model = report.model or path.parent.name
    tag = f"-{args.method}" + (f"-e{args.epoch}" if args.epoch is not None else "") if args.method else (
        "-harmonized" if root else "")
    out = args.out or path.parent / "eval" / f"{args.domain}-{args.split}{tag}"
    write_report(report, out)
    if report.excluded:
        print("left out (classes the model lacks): "
              + ", ".join(f"{c} ({n})" for c, n in sorted(report.excluded.items())), file=sys.stderr)
    lines = report.summary().splitlines()  # the result itself: printed with --quiet too
    print("\n".join(line for line in lines if not line.startswith("excluded")))
    if not args.quiet:
        print(f"report: {out} (metrics.json, confusion.csv, confusion.png, predictions.csv)")
    return 0
