"""``stainshift domains add|list|inspect|split``: name image folders and look at them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stainshift.errors import ProjectError

EXAMPLES = {
    "add": "example: stainshift domains add clinic ../shared/data/pbc_barcelona --classes neutrophil,lymphocyte "
           "(whole smear fields: stainshift domains add newsite data/newsite --fields)",
    "list": "example: stainshift domains list",
    "inspect": "example: stainshift domains inspect clinic --save-scale",
    "split": "example: stainshift domains split hgtp --refresh --skip-bad",
}


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("domains", help="add, list, inspect and split image domains (hospitals)",
                           description=__doc__, epilog="example: stainshift domains add hgtp data/jtsc_tecom")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[common], help=help_, description=help_, epilog=EXAMPLES[name])

    p = action("add", "name a folder of images (one subfolder per class) as a domain")
    p.add_argument("name")
    p.add_argument("path", help="folder with one subfolder of images per class")
    p.add_argument("--masks", help="masks folder, same layout and file stems (default: PATH/masks if present)")
    p.add_argument("--classes", help="comma-separated subset / order of classes")
    p.add_argument("--cell-diameter", help="cell diameter in px, or 'auto' to estimate it")
    p.add_argument("--split", help="train,val,test fractions for this domain, e.g. 0.4,0.2,0.4")
    p.add_argument("--force", action="store_true", help="replace an existing domain of that name")
    p.add_argument("--fields", action="store_true",
                   help="the images are whole smear fields: locate each white cell (from the masks when given) and "
                        "frame it at the domain's cell-diameter scale in every later step")
    p.set_defaults(func=run_add)

    p = action("list", "list the project's domains")
    p.set_defaults(func=run_list)

    p = action("inspect", "class counts, sizes, L*a*b* colour, cell diameter, unreadable files")
    p.add_argument("name")
    p.add_argument("--save-scale", action="store_true",
                   help="write the estimated cell diameter into the project file as the domain's cell_diameter")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_inspect)

    p = action("split", "make (or show) the saved stratified train/val/test split")
    p.add_argument("name")
    p.add_argument("--refresh", action="store_true", help="re-split after the domain's files changed")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out of the split, listing them")
    p.set_defaults(func=run_split)


def _number_or_auto(text: str | None) -> float | str | None:
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ProjectError(f"--cell-diameter {text!r}: give a number of pixels or 'auto'") from None


def _generation_manifest(path: Path) -> str | None:
    """The manifest that marks ``path`` as written by `synth generate` or `rare generate`, with its kind."""
    for manifest in (path / "manifest.json", path.parent / "manifest.json"):
        try:
            kind = json.loads(manifest.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            continue
        from stainshift.rare import KIND as RARE
        from stainshift.synth.generate import KIND as SYNTH

        if kind in (RARE, SYNTH):
            return f"{manifest}: {kind}"
    return None


def run_add(args: argparse.Namespace) -> int:
    from stainshift.data.domains import add_domain
    from stainshift.project import load_or_new_project

    fractions = None
    if args.split:
        try:
            fractions = [float(v) for v in args.split.split(",")]
        except ValueError:
            raise ProjectError(f"--split {args.split!r}: give train,val,test fractions such as 0.6,0.2,0.2") from None
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    project, samples = add_domain(load_or_new_project(args.project), args.name, args.path, masks=args.masks,
                                  classes=classes, cell_diameter=_number_or_auto(args.cell_diameter),
                                  split=fractions, force=args.force, fields=args.fields, progress=not args.quiet)
    if not args.quiet:
        labels = sorted({s.label for s in samples})
        n_masks = sum(s.mask is not None for s in samples)
        print(f"added domain '{args.name}': {len(samples)} images in {len(labels)} classes ({', '.join(labels)}), "
              f"{n_masks} with masks -> {project.file}")
        generated = _generation_manifest(Path(args.path))
        if generated:
            print(f"note: {args.path} holds generated images ({generated}); none of them is a real cell")
        if args.fields:
            from stainshift.data.fields import cells_per_field, field_cells

            per = cells_per_field(field_cells(project, args.name, samples))
            print(f"located white cells per field: {', '.join(f'{k}: {v}' for k, v in per.items())} fields"
                  + (" (fields with none keep their centre; see `stainshift domains inspect`)" if per["0"] else ""))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from stainshift.data.domains import scan_domain
    from stainshift.errors import StainshiftError
    from stainshift.project import load_project

    project = load_project(args.project)
    if not project.domains:
        print(f"no domains in {project.file}; add one with `stainshift domains add NAME PATH`")
        return 0
    print(f"{'name':<12} {'images':>7} {'classes':>7}  masks  path")
    for name, domain in project.domains.items():
        try:
            samples = scan_domain(domain)
            n, k = str(len(samples)), str(len({s.label for s in samples}))
        except StainshiftError:
            n, k = "missing", "-"
        print(f"{name:<12} {n:>7} {k:>7}  {'yes' if domain.masks else 'no ':<5}  {domain.path}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    import dataclasses

    from stainshift.data.inspect import inspect_domain
    from stainshift.project import load_project, save_project

    project = load_project(args.project)
    report = inspect_domain(project, args.name, progress=not args.quiet)
    print(json.dumps(dataclasses.asdict(report), indent=2) if args.json else report.to_text())
    if args.save_scale and report.diameter.get("median"):
        domain = dataclasses.replace(project.domain(args.name), cell_diameter=round(report.diameter["median"], 1))
        save_project(project.with_domain(domain))
        if not args.quiet:
            print(f"saved cell_diameter = {domain.cell_diameter} for '{args.name}' in {project.file}")
    if report.unreadable:
        print(f"stainshift: {len(report.unreadable)} unreadable file(s) in '{args.name}' (listed above); fix or "
              "remove them, or pass --skip-bad to `domains split`", file=sys.stderr)
        return 1
    return 0


def run_split(args: argparse.Namespace) -> int:
    from stainshift.data.splits import domain_split, split_file
    from stainshift.project import load_project

    project = load_project(args.project)
    frame = domain_split(project, args.name, refresh=args.refresh, skip_bad=args.skip_bad, progress=not args.quiet)
    if not args.quiet:
        table = frame.groupby(["label", "split"], sort=False).size().unstack(fill_value=0)
        table = table.reindex(columns=[c for c in ("train", "val", "test") if c in table.columns])
        print(table.to_string())
        print(f"split saved in {split_file(project, args.name)}")
    return 0
