"""``stainshift train MODEL``: learn the translation from one domain's staining to another's (any learned model of
the registry: cyclegan, colorization, ...)."""

from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLE = """examples:
  stainshift train cyclegan --src hgtp --dst clinic --preset cpu
  stainshift train cyclegan --src hgtp --dst clinic --epochs 6 --keep-epochs 1,2,3,4,5,6 --balanced
  stainshift train cyclegan --src hgtp --dst clinic --resume        # continue the latest run exactly
  stainshift train cyclegan --src hgtp --dst clinic --init-from runs/hgtp_to_clinic/cyclegan/cpu-s0  # warm start
  torchrun --nproc_per_node 2 -m stainshift train cyclegan --src hgtp --dst clinic   # data-parallel (gloo/NCCL)
Models that learn from the target alone (colorization) take --src for the run's folder name; without it, --dst.
The run goes to runs/<src>_to_<dst>/<method>/<run_id>/ (config.json, last.pt, epochs/, samples/, manifest.json)."""


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated epoch numbers, e.g. 1,2,3,5,10") from None


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set {text!r}: use KEY=VALUE, e.g. --set ngf=16")
    for cast in (int, float):
        try:
            return key.strip(), cast(value)
        except ValueError:
            pass
    if "," in value:
        return key.strip(), _ints(value)
    return key.strip(), {"true": True, "false": False}.get(value.lower(), value)


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    from stainshift.models.kinds import Kind
    from stainshift.models.registry import entries, names

    models = ", ".join(f"{e.name} ({e.summary})" for e in entries(Kind.LEARNED))
    p = sub.add_parser("train", parents=[common], help="train a learned translation model between two domains",
                       description=f"{__doc__}\nmodels: {models}", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=names(Kind.LEARNED))
    p.add_argument("--src", help="source domain (the hospital whose images get translated); models that learn from "
                   "the target alone default to --dst")
    p.add_argument("--dst", required=True, help="target domain (the staining to reproduce)")
    add_training_options(p)
    p.set_defaults(func=run)


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The options every training command shares (`train`, `synth train`)."""
    p.add_argument("--preset", default="cpu", help="option preset: cpu (2 CPU cores), paper, tiny (tests); some "
                   "models have more (default: cpu)")
    p.add_argument("--epochs", type=int, help="epochs at constant learning rate (preset default otherwise)")
    p.add_argument("--epochs-decay", type=int, help="further epochs with linear learning-rate decay")
    p.add_argument("--keep-epochs", type=_ints, help="epochs whose generator is kept, e.g. 1,2,3,5,10")
    p.add_argument("--crop", type=int, help="training crop size in pixels")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE", type=_option,
                   help="override any model option, e.g. --set ngf=16 --set lambda_identity=0 (repeatable)")
    p.add_argument("--balanced", action="store_true", help="class-balanced sampling of both domains")
    p.add_argument("--resume", action="store_true", help="continue the latest (or --run-id) run from its last.pt")
    p.add_argument("--run-id", help="name of the run folder (default: <preset>-s<seed>-<time>)")
    p.add_argument("--init-from", type=Path, metavar="PATH",
                   help="start from another run's weights: its folder, its last.pt or an epoch file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on GPU")
    p.add_argument("--no-track", action="store_true", help="do not log to mlflow")


def training_request(args: argparse.Namespace, src: str, dst: str):
    """The TrainRequest of parsed training options."""
    from stainshift.train.loop import TrainRequest

    named = {"epochs": args.epochs, "epochs_decay": args.epochs_decay, "keep_epochs": args.keep_epochs,
             "crop_size": args.crop, "batch_size": args.batch_size}
    fields = {**dict(args.options), **{k: v for k, v in named.items() if v is not None}}
    return TrainRequest(
        src=src, dst=dst, method=args.method, preset=args.preset, seed=args.seed,
        overrides=fields, balanced=args.balanced, resume=args.resume,
        run_id=args.run_id, num_workers=args.workers, device=args.device, amp=not args.no_amp,
        progress=not args.quiet, track=not args.no_track, init_from=args.init_from,
    )


def run(args: argparse.Namespace) -> int:
    from stainshift.errors import StainshiftError
    from stainshift.models.registry import entry, model_class
    from stainshift.project import load_project
    from stainshift.train.loop import train

    if entry(args.method).between_classes:
        raise StainshiftError(f"{args.method} turns one class of a domain into another: use `stainshift rare train "
                              "--domain D --from CLASS --to CLASS`")
    src = args.src
    if src is None:
        if model_class(args.method).data_regime.needs_source:
            raise StainshiftError(f"{args.method} learns from two domains: pass --src (the domain to translate)")
        src = args.dst

    request = training_request(args, src, args.dst)
    result = train(load_project(args.project), request)
    if not args.quiet:
        kept = [e["epoch"] for e in result.manifest if "checkpoint" in e]
        print(f"trained {args.method} {src} -> {args.dst}: {result.epochs_done} epochs in {result.run_dir}")
        print(f"kept epochs: {', '.join(map(str, kept)) or 'none'}; next: stainshift harmonize --src {src} "
              f"--dst {args.dst} --method {args.method} --epoch {kept[-1] if kept else 'last'}")
    return 0
