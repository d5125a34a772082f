"""``stainshift synth shapes|masks|coco|train|generate``: cell-shape databases, synthetic instance masks and their
COCO files, mask-to-image generators trained on a domain's images and masks, and the images they generate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LAYOUTS = ("markov", "graph", "uniform")  # = stainshift.synth.placement.Layout
OVERLAPS = ("forbid", "allow")  # = stainshift.synth.masks.Overlap
ENCODINGS = ("rle", "polygon")  # = stainshift.synth.coco.Segmentation

EXAMPLES = {
    "shapes": """examples:
  stainshift synth shapes --domain jtsc                 # cells of the domain's masks/<class>/*.png
  stainshift synth shapes --simulator                   # the simulator's white and red cells
  stainshift synth shapes --masks ../shared/data/bccd/masks/smears   # whole-field masks, one class
  stainshift synth shapes --domain jtsc --voc ../shared/data/bccd_voc/annotations   # red-cell counts from boxes
Prints the shapes per class and writes a contact sheet; the database is cached in
runs/synth/shapes/<domain>.npz and rebuilt only when the masks change.""",
    "masks": """examples:
  stainshift synth masks --simulator --n 100 --size 640x480 --layout markov --out synth/fields
  stainshift synth masks --domain jtsc --n 200 --size 128x128 --crop --render hgtp --out synth/jtsc_cells
  stainshift synth masks --simulator --n 10 --size 1920x1200 --cells 669 --white 0 --red-px 46 --out synth/rbc
  stainshift synth masks --simulator --n 50 --size 640x480 --layout graph --classes neutrophil=3,lymphocyte=1 --out g
Writes instance/ (16-bit, class_id*1000+k), semantic/ (0 bg, 1 red cell, 2 cytoplasm, 3 nucleus), colour/,
images/ with --render, coco.json and manifest.json. Seeded: mask i depends on (--seed, i) only; an interrupted
run resumes when given the same arguments.""",
    "coco": """examples:
  stainshift synth coco synth/fields                    # rewrite synth/fields/coco.json (RLE)
  stainshift synth coco synth/fields --encoding polygon --out fields_polygons.json
Checks every instance mask against the id convention first.""",
    "train": """examples:
  stainshift synth train pix2pix --domain jtsc                       # the domain's images with their own masks
  stainshift synth train pix2pix --domain jtsc --preset cpu-noise-global   # paper 004: mask + noise, global D
  stainshift synth train pix2pixhd --domain bccd --epochs 5 --keep-epochs 1,2,3,4,5
  stainshift synth train pix2pixhd --domain bccd --set n_local_enhancers=1 --init-from runs/bccd_to_bccd/pix2pixhd/RUN
  stainshift synth train cyclegan --domain pbc --masks-from jtsc      # unpaired: jtsc's masks, pbc's images
The run goes to runs/<domain>_to_<domain>/<model>/<run_id>/ like any training run (exact --resume, kept epochs,
mlflow); then `stainshift select --src D --dst D --method <model>` scores its kept epochs.""",
    "generate": """examples:
  stainshift synth generate --domain jtsc --masks synth/jtsc_cells --out synth/jtsc_images          # best epoch
  stainshift synth generate --domain jtsc --method pix2pix --epoch 5 --masks synth/jtsc_cells --out g --n 50
  stainshift synth generate --domain bccd --method pix2pixhd --style 3 --masks synth/fields --out g3
Writes images/<class>/, masks/<class>/ (a domain: `domains add NAME OUT/images --masks OUT/masks`), instance/,
semantic/, coco.json and manifest.json (model, run, epoch, checkpoint hash, seed, style, the mask of every image).""",
}


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("synth", help="synthetic cell masks: shape databases, layouts, COCO annotations",
                           description=__doc__, epilog="example: stainshift synth masks --simulator --n 10 --out m",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[common], help=help_, description=help_, epilog=EXAMPLES[name],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)

    def source(p: argparse.ArgumentParser) -> None:
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--domain", help="a project domain with masks")
        which.add_argument("--simulator", action="store_true", help="the simulator's cells (no project needed)")
        which.add_argument("--masks", metavar="DIR", help="any folder of value-coded masks (e.g. whole smear fields); "
                                                          "subfolders name classes, loose files are 'white_cell'")
        p.add_argument("--voc", help="folder of Pascal VOC boxes (RBC, WBC) to measure red-cell counts and sizes "
                                     "from (default: the built-in bccd_voc figures)")
        p.add_argument("--rebuild", action="store_true", help="rebuild the cached shape database (--domain; the "
                                                              "others are built each time)")

    p = action("shapes", "build (or reuse) a domain's cell-shape database, print its counts, draw a contact sheet")
    source(p)
    p.add_argument("--sheet", help="where to write the contact sheet PNG (default: next to the database)")
    p.set_defaults(func=run_shapes)

    p = action("masks", "write synthetic instance / semantic / colour masks with COCO annotations")
    source(p)
    p.add_argument("--out", required=True, help="output folder (new, empty, or one to resume)")
    p.add_argument("--n", type=int, default=100, help="number of masks (default 100)")
    p.add_argument("--size", default="640x480", help="WIDTHxHEIGHT in pixels (default 640x480)")
    p.add_argument("--layout", choices=LAYOUTS, default="markov",
                   help="markov: adhesion-aware (paper 001); graph: DGM graph layout (paper 002); uniform")
    p.add_argument("--cells", type=int, help="red cells per mask (default: drawn from the field statistics)")
    p.add_argument("--white", type=int, help="white cells per mask (default: from the field statistics, >= 1)")
    p.add_argument("--classes", help="white-class proportions, e.g. neutrophil=0.6,lymphocyte=0.3,monocyte=0.1 "
                                     "(default: equal over the database's classes)")
    p.add_argument("--crop", action="store_true", help="single-cell crops: one white cell near the centre")
    p.add_argument("--overlap", choices=OVERLAPS, default="forbid", help="may cells cover each other (default no)")
    p.add_argument("--colours", type=int, default=6, help="shades per class in the colour-coded mask (default 6)")
    p.add_argument("--scale", type=float, default=1.0, help="scale every shape by this factor")
    p.add_argument("--red-px", type=float, help="red-cell diameter in pixels (default: from the field statistics)")
    p.add_argument("--n-init", type=int, default=20, help="cells placed uniformly before adhesion (default 20)")
    p.add_argument("--render", metavar="HOSPITAL", help="also render images with the simulator under this "
                                                        "hospital protocol (clinic, hgtp, site3, ...)")
    p.add_argument("--encoding", choices=ENCODINGS, default="rle", help="COCO segmentation (default rle)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_masks)

    p = action("coco", "(re)write the COCO annotations of a synthetic-mask folder")
    p.add_argument("folder", help="a folder written by `stainshift synth masks`")
    p.add_argument("--encoding", choices=ENCODINGS, default="rle")
    p.add_argument("--out", help="JSON file to write (default: FOLDER/coco.json)")
    p.set_defaults(func=run_coco)

    from stainshift.cli.train import add_training_options
    from stainshift.models.kinds import Kind, Modality
    from stainshift.models.registry import entries

    mask_models = [e.name for e in entries(Kind.LEARNED) if e.consumes is Modality.MASK]
    p = action("train", "train a mask-to-image generator on a domain's images and their masks")
    p.add_argument("method", choices=[*mask_models, "cyclegan"],
                   help="cyclegan = maskcyclegan, the unpaired one (with --masks-from)")
    p.add_argument("--domain", required=True, help="the domain whose images to generate; with masks (`masks = "
                                                   "PATH` in its table) unless --masks-from names another")
    p.add_argument("--masks-from", metavar="DOMAIN", help="unpaired models: the domain whose masks to learn from")
    add_training_options(p)
    p.set_defaults(func=run_train)

    p = action("generate", "generate images from masks with a trained mask-to-image generator")
    p.add_argument("--domain", required=True, help="the domain the generator was trained on")
    p.add_argument("--method", choices=[*mask_models, "cyclegan"], default=mask_models[0] if mask_models else None,
                   help="cyclegan = maskcyclegan (with --masks-from)")
    p.add_argument("--masks", required=True, metavar="DIR", help="a folder from `synth masks`, or value-coded mask "
                                                                 "PNGs (0 background, 128 cytoplasm, 255 nucleus)")
    p.add_argument("--out", required=True, help="output folder (new, empty, or one to resume)")
    p.add_argument("--epoch", default="best", help="best (the selected one; run `select` first), last, or N")
    p.add_argument("--run-id", help="which training run (default: the latest)")
    p.add_argument("--masks-from", metavar="DOMAIN", help="unpaired models: the domain their run learnt masks from")
    p.add_argument("--style", type=int, help="pix2pixhd: use style cluster K for every cell (default: sampled)")
    p.add_argument("--n", type=int, help="only the first N masks")
    p.add_argument("--cell-by-cell", action="store_true", help="compose each field from single-cell generations on "
                                                               "a generated background (models trained on cells)")
    p.add_argument("--seed", type=int, default=0, help="noise and sampled styles of image i depend on (seed, i)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=run_generate)


def _database(args: argparse.Namespace):
    from stainshift.synth.shapes import domain_database, field_stats_from_voc, folder_database, simulator_database

    if args.simulator or args.masks:
        db = simulator_database() if args.simulator else folder_database(args.masks)
        if args.voc:
            db.field_stats = field_stats_from_voc(args.voc)
        return db, None
    from stainshift.project import load_project
    from stainshift.runs import shapes_file

    project = load_project(args.project)
    return domain_database(project, args.domain, rebuild=args.rebuild, voc=args.voc), \
        shapes_file(project, args.domain)


def run_shapes(args: argparse.Namespace) -> int:
    from stainshift.data.io import write_image
    from stainshift.synth.shapes import RED_CELL, contact_sheet

    db, path = _database(args)
    sheet_path = Path(args.sheet) if args.sheet else (path.with_suffix(".png") if path else
                                                      Path(f"{db.name}_shapes.png"))
    write_image(sheet_path, contact_sheet(db))
    if not args.quiet:
        where = f" ({path})" if path else ""
        print(f"shape database {db.name!r}{where}")
        for cls, n in db.counts().items():
            size = f"median diameter {db.diameter(cls):5.1f} px"
            skipped = f", {db.skipped[cls]} left out (cut by the border or specks)" if db.skipped.get(cls) else ""
            print(f"  {cls:<14} {n:>5} shapes   {size}   from {db.sources.get(cls, '?')}{skipped}")
        f = db.field_stats
        print(f"  red cells per {f.field_size[0]}x{f.field_size[1]} field {f.red_mean:.1f} +- {f.red_sd:.1f}, "
              f"red/white diameter {f.red_to_white_diameter:.2f} ({f.source}); {RED_CELL} outlines are ellipses")
        print(f"contact sheet: {sheet_path}")
    return 0


def parse_size(text: str) -> tuple[int, int]:
    from stainshift.errors import StainshiftError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StainshiftError(f"--size {text!r}: give WIDTHxHEIGHT in pixels, e.g. 640x480") from None
    if w < 1 or h < 1:
        raise StainshiftError(f"--size {text!r}: width and height must be positive")
    return w, h


def parse_classes(text: str | None) -> dict[str, float] | None:
    from stainshift.errors import StainshiftError

    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value) if value else 1.0
        except ValueError:
            raise StainshiftError(f"--classes {text!r}: give name=proportion pairs, e.g. neutrophil=0.6,"
                                  "lymphocyte=0.4") from None
    return out


def run_masks(args: argparse.Namespace) -> int:
    from stainshift.synth.coco import Segmentation
    from stainshift.synth.dataset import write_mask_set
    from stainshift.synth.masks import MaskSpec, Overlap
    from stainshift.synth.placement import Layout

    db, _ = _database(args)
    spec = MaskSpec(size=parse_size(args.size), layout=Layout(args.layout), red_cells=args.cells,
                    white_cells=args.white, classes=parse_classes(args.classes), overlap=Overlap(args.overlap),
                    n_init=args.n_init, colours=args.colours, scale=args.scale, red_px=args.red_px, crop=args.crop)
    manifest = write_mask_set(db, spec, args.n, args.out, seed=args.seed, render=args.render,
                              encoding=Segmentation(args.encoding), progress=not args.quiet)
    if not args.quiet:
        masks = manifest["masks"]
        totals: dict[str, int] = {}
        for m in masks:
            for cls, n in m["cells"].items():
                totals[cls] = totals.get(cls, 0) + n
        dropped = sum(m["dropped"] for m in masks)
        cells = ", ".join(f"{c} {n}" for c, n in totals.items() if n)
        print(f"wrote {len(masks)} masks to {args.out}: {cells}; {dropped} cells did not fit and were left out")
        print(f"categories: {json.dumps(manifest['categories'])}")
    return 0


def run_coco(args: argparse.Namespace) -> int:
    from stainshift.synth.coco import Segmentation
    from stainshift.synth.dataset import export_coco

    path = export_coco(args.folder, Segmentation(args.encoding), args.out)
    if not args.quiet:
        print(f"wrote {path}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from stainshift.cli.train import training_request
    from stainshift.errors import StainshiftError
    from stainshift.models.registry import model_class
    from stainshift.project import load_project
    from stainshift.train.loop import train

    if args.method == "cyclegan":
        args.method = "maskcyclegan"
    unpaired = model_class(args.method).data_regime.masks_from_source
    if unpaired and not args.masks_from:
        raise StainshiftError(f"{args.method} learns from unpaired masks: pass --masks-from DOMAIN (a domain with "
                              "masks; it may be --domain itself)")
    if args.masks_from and not unpaired:
        raise StainshiftError(f"{args.method} learns from the domain's own image/mask pairs: leave out "
                              "--masks-from (or train cyclegan, the unpaired one)")
    src = args.masks_from or args.domain
    result = train(load_project(args.project), training_request(args, src, args.domain))
    if not args.quiet:
        kept = [e["epoch"] for e in result.manifest if "checkpoint" in e]
        print(f"trained {args.method} masks -> {args.domain} images: {result.epochs_done} epochs in {result.run_dir}")
        extra = f" --masks-from {src}" if args.masks_from else ""
        print(f"kept epochs: {', '.join(map(str, kept)) or 'none'}; next: stainshift select --src {src} "
              f"--dst {args.domain} --method {args.method}, then stainshift synth generate --domain {args.domain} "
              f"--method {args.method}{extra} --masks DIR --out DIR")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from stainshift.project import load_project
    from stainshift.synth.generate import generate

    epoch = args.epoch if args.epoch in ("best", "last") else _epoch_number(args.epoch)
    if args.method == "cyclegan":
        args.method = "maskcyclegan"
    manifest = generate(load_project(args.project), args.domain, args.masks, args.out, method=args.method,
                        epoch=epoch, run_id=args.run_id, style=args.style, n=args.n, seed=args.seed,
                        device=args.device, progress=not args.quiet, masks_from=args.masks_from,
                        cell_by_cell=args.cell_by_cell)
    if not args.quiet:
        images = manifest["images"]
        by_class: dict[str, int] = {}
        for e in images:
            by_class[e["class"]] = by_class.get(e["class"], 0) + 1
        c = manifest["config"]
        counts = ", ".join(f"{k} {v}" for k, v in by_class.items())
        print(f"wrote {len(images)} generated images to {args.out} ({counts})"
              f" with {c['method']} epoch {c['epoch']} of run {c['run']}")
    return 0


def _epoch_number(text: str) -> int:
    from stainshift.errors import StainshiftError

    try:
        return int(text)
    except ValueError:
        raise StainshiftError(f"--epoch {text!r}: pass best, last or an epoch number") from None
