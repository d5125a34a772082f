"""``stainshift benchmark``: accuracy on the source hospital before and after every harmonization method."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  stainshift benchmark --src hgtp --dst clinic
  stainshift benchmark --src hgtp --dst clinic --classifiers resnet18 --epochs 5 --size 64
Trains (or reuses) the target-domain classifiers, harmonizes the source with every method and kept epoch (every
image-to-image model of the registry with a run for the pair), selects their epochs under both rules, fine-tunes
on the source (upper bound) and writes runs/<src>_to_<dst>/benchmark/ (benchmark.md, benchmark.csv,
accuracy_vs_epoch.png)."""


CLASSIFIERS = ("resnet18", "resnet18-focal", "resnet34", "resnet34-focal")  # = stainshift.benchmark.CLASSIFIERS


def _shots(text: str) -> tuple[int, ...]:
    try:
        shots = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        shots = ()
    if not shots or min(shots) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers of labelled images, e.g. 0,10,25")
    return shots


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        seeds = ()
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated GAN seeds, e.g. 0,1,2")
    return seeds


def _augment(text: str) -> tuple[str, ...]:
    kinds = () if text.strip() == "none" else tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in ("hed", "lab")]
    if bad:
        raise argparse.ArgumentTypeError(f"{text!r}: use hed, lab, hed,lab or none")
    return kinds


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("benchmark", parents=[common], help="accuracy before/after harmonization, every method",
                       description=__doc__, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="source domain (evaluated on its test split)")
    p.add_argument("--dst", required=True, help="target domain (the classifiers are trained on it)")
    p.add_argument("--classifiers", default="resnet18,resnet18-focal,resnet34,resnet34-focal",
                   help="comma-separated, from resnet18, resnet18-focal, resnet34, resnet34-focal")
    p.add_argument("--norm", default="group", choices=["batch", "group", "frozen-batch"])
    p.add_argument("--size", type=int, default=96, help="classifier input size in pixels")
    p.add_argument("--epochs", type=int, default=10, help="classifier training epochs")
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--balanced-finetune", action="store_true",
                   help="fine-tune the upper bound with class-balanced sampling (default: the data as it comes)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="the reported classifiers' seed (default 0)")
    p.add_argument("--seeds", type=_seeds, metavar="S,S,...",
                   help="GAN seeds: one run per seed (trained with `stainshift train ... --seed S`); the table "
                        "reports mean and spread across seeds (default: the pair's latest run only)")
    p.add_argument("--run-prefix", metavar="PREFIX",
                   help="with --seeds: only runs whose id starts with PREFIX (one training variant, e.g. stable-)")
    p.add_argument("--selection-classifier", default="resnet18", choices=list(CLASSIFIERS),
                   help="the classifier that picks epochs for both rules (never reported; default resnet18)")
    p.add_argument("--selection-seed", type=int, default=1, help="its seed, other than --seed (default 1)")
    p.add_argument("--stain-augment", default="hed,lab", type=_augment, metavar="KINDS",
                   help="competitor classifiers trained with stain augmentation: hed, lab, both (default) or none")
    p.add_argument("--shots", type=_shots, metavar="K,K,...",
                   help="label curve: the first classifier fine-tuned on K labelled source images (0: as is), per "
                        "condition, e.g. 0,10,25,50,100")
    p.add_argument("--shot-draws", type=int, default=3, help="random draws of the K images per point (default 3)")
    p.add_argument("--boot", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    p.add_argument("--no-track", action="store_true", help="do not log to mlflow")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from stainshift.benchmark import BenchmarkRequest, run_benchmark
    from stainshift.project import load_project

    request = BenchmarkRequest(args.src, args.dst, tuple(c.strip() for c in args.classifiers.split(",") if c.strip()),
                               norm=args.norm, size=args.size, epochs=args.epochs,
                               finetune_epochs=args.finetune_epochs, finetune_balanced=args.balanced_finetune,
                               batch_size=args.batch_size, seed=args.seed, gan_seeds=args.seeds,
                               run_prefix=args.run_prefix, shots=tuple(args.shots or ()),
                               shot_draws=args.shot_draws,
                               selection_classifier=args.selection_classifier, selection_seed=args.selection_seed,
                               stain_augment=args.stain_augment, n_boot=args.boot, progress=not args.quiet,
                               track=not args.no_track)
    result = run_benchmark(load_project(args.project), request, argv=["stainshift", *sys.argv[1:]])
    print(result.files["markdown"].read_text())
    return 0 if len(result.table) else 1
