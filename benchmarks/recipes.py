"""The recipes of ``pipelines/`` run end to end on the shared real sites, as a user runs them.

    python benchmarks/recipes.py [--recipes paper_block_3,mask_to_image] [--work benchmarks/runs/recipes]

Each recipe runs through :func:`stainshift.pipeline.run_pipeline` (what ``stainshift pipeline run`` calls) in a
project of its own under ``--work`` (not in git), with the recipe's own variables except the domain:

- ``paper_block_3``: ``pbc8`` = pbc_barcelona with all 8 classes (the recipe's default pair, lymphocyte ->
  erythroblast, needs the erythroblasts that ``real_sites.toml``'s 4-class ``pbc`` leaves out);
- ``mask_to_image``: ``jtsc`` = jtsc_tecom with its nucleus/cytoplasm masks;
- ``paper_blocks_1_2``: ``jtsc`` -> ``pbc`` (pbc_barcelona's 4 classes, as in ``real_sites.toml``), with one
  benchmark classifier (resnet18) instead of the recipe's four.

Writes ``benchmarks/results/recipes.md`` (commands, the time of every step, the selection tables the recipes wrote),
``recipes.json`` (provenance read at the start, step reports) and one picture per recipe
(``recipes_<recipe>.png``: what went in, what came out, real images of the target). A second call with the same
``--work`` skips the steps that are up to date, as ``pipeline run`` does, so an interrupted run resumes.
The data comes from ``../shared/data`` (or ``$STAINSHIFT_DATA``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provenance import record, require_clean  # noqa: E402

from stainshift.atomic import atomic_write_text, save_figure  # noqa: E402
from stainshift.data.io import read_image, read_mask  # noqa: E402
from stainshift.pipeline import load_recipe, run_pipeline  # noqa: E402
from stainshift.project import load_project  # noqa: E402

RESULTS = HERE / "results"
PIPELINES = HERE.parent / "pipelines"
RECIPES = ("paper_block_3", "mask_to_image", "paper_blocks_1_2")
# the recipes' own variables, except the domains and, for blocks 1-2, one benchmark classifier instead of four (the
# cross-site benchmark measured the others; four take hours here)
SETS = {"paper_block_3": {"domain": "pbc8"}, "mask_to_image": {"domain": "jtsc"},
        "paper_blocks_1_2": {"src": "jtsc", "dst": "pbc", "classifiers": "resnet18"}}


def data_root() -> Path:
    return Path(os.environ.get("STAINSHIFT_DATA", HERE.parents[1] / "shared" / "data")).resolve()


def write_project(folder: Path, data: Path) -> Path:
    """The recipes' project: the two domains at their measured cell diameters (see real_sites.toml)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = f"""# written by benchmarks/recipes.py
[project]
runs = "runs"
tracking_uri = "sqlite:///runs/mlflow.db"
cell_diameter = 64
split = [0.4, 0.2, 0.4]
seed = 0

[domains.pbc8]
path = "{data / 'pbc_barcelona'}"
classes = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
cell_diameter = 129.5

[domains.pbc]
path = "{data / 'pbc_barcelona'}"
classes = ["neutrophil", "lymphocyte", "monocyte", "eosinophil"]
cell_diameter = 129.5

[domains.jtsc]
path = "{data / 'jtsc_tecom'}"
masks = "{data / 'jtsc_tecom' / 'masks'}"
classes = ["neutrophil", "lymphocyte", "monocyte", "eosinophil"]
cell_diameter = 74.6
"""
    path = folder / "stainshift.toml"
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


def _square(image: np.ndarray, side: int = 128) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return cv2.resize(image[top:top + s, left:left + s], (side, side), interpolation=cv2.INTER_AREA)


def _rows_figure(rows: list[tuple[str, list[np.ndarray]]], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols, 1.45 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(_square(images[c]))
        axes[r][0].set_title(label, fontsize=7, loc="left")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def _mask_colours(values: np.ndarray) -> np.ndarray:
    """A value-coded mask (0 background, 128 cytoplasm, 255 nucleus, as jtsc stores them) as colours."""
    palette = np.array([[240, 240, 240], [230, 150, 190], [90, 40, 140]], np.uint8)
    return palette[np.digitize(values, [64, 192])]


def block_3_figure(project, out: Path, n: int, path: Path) -> Path:
    manifest = json.loads((out / "manifest.json").read_text())
    config = manifest["config"]
    entries = [e for e in manifest["images"] if e["variant"] == 0][:n]
    root = project.domain(config["domain"]).folder
    targets = sorted((root / config["to"]).iterdir())[:n]
    rows = [(f"real {config['from']} (the inputs)", [read_image(root / e["source"]) for e in entries]),
            (f"generated {config['to']} (epoch {config['epoch']})", [read_image(out / e["image"]) for e in entries]),
            (f"real {config['to']} (other cells)", [read_image(p) for p in targets])]
    return _rows_figure(rows, f"paper_block_3 on {config['domain']}: {config['from']} -> {config['to']}", path)


def mask_to_image_figure(project, domain: str, out: Path, n: int, path: Path) -> Path:
    manifest = json.loads((out / "images" / "manifest.json").read_text())
    entries = manifest["images"][:n]
    root = project.domain(domain).folder
    reals = sorted(p for p in root.rglob("*.bmp") if "masks" not in p.relative_to(root).parts)[:n]
    rows = [("synthetic masks (nucleus dark)", [_mask_colours(read_mask(out / "images" / e["mask"]))
                                                for e in entries]),
            ("generated images", [read_image(out / "images" / e["image"]) for e in entries]),
            ("real images (other cells)", [read_image(p) for p in reals])]
    return _rows_figure(rows, "mask_to_image: synthetic masks -> selected generator epoch", path)


def _selection_table(project, pattern: str, columns: int = 9) -> str:
    """The newest run's selection.csv as Markdown (its first ``columns`` score columns), the chosen epoch starred."""
    tables = sorted(project.root.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not tables:
        return "(no selection table written)"
    chosen = json.loads((tables[-1].parent / "selected.json").read_text()).get("epoch")
    frame = pd.read_csv(tables[-1]).dropna(axis=1, how="all")
    keep = ["epoch", *[c for c in frame.columns if c not in ("epoch", "seconds")][:columns - 1]]
    frame = frame[keep]
    lines = ["| " + " | ".join(keep) + " |", "|" + "---|" * len(keep)]
    for row in frame.itertuples(index=False):
        cells = [f"{row.epoch}{' *' if row.epoch == chosen else ''}"]
        cells += [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _section(markdown: Path, title: str) -> list[str]:
    """One ``## title`` section of a Markdown file, without its heading."""
    lines, keep = markdown.read_text().splitlines(), False
    out = []
    for line in lines:
        if line.startswith("## "):
            keep = line[3:].startswith(title)
            continue
        if keep:
            out.append(line)
    return "\n".join(out).strip().splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--work", default=str(HERE / "runs" / "recipes"), help="the recipes' project folder")
    parser.add_argument("--set", action="append", default=[], metavar="RECIPE:NAME=VALUE",
                        help="override one recipe variable (e.g. for a smoke run: paper_block_3:n=8)")
    parser.add_argument("--allow-dirty", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    require_clean(args.allow_dirty, "benchmarks/recipes.py")
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown:
        raise SystemExit(f"--recipes: unknown {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    data = data_root()
    if not (data / "pbc_barcelona").is_dir():
        raise SystemExit(f"skipped: {data / 'pbc_barcelona'} not found (set STAINSHIFT_DATA)")
    sets = {name: dict(SETS[name]) for name in RECIPES}
    for item in args.set:
        recipe_name, _, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if recipe_name not in sets or not eq:
            raise SystemExit(f"--set {item}: write RECIPE:NAME=VALUE with RECIPE one of {', '.join(RECIPES)}")
        sets[recipe_name][key] = value
    meta = record(vars(args))
    project = load_project(write_project(Path(args.work), data))
    reports = {}
    md = ["# The `pipelines/` recipes, end to end on real images", "",
          f"- started {meta['started']}, commit {meta['commit']} (dirty: {meta['dirty']}), command "
          f"`{meta['command']}`",
          f"- machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, torch threads "
          f"{meta['machine']['torch_threads']}; no GPU",
          "- each recipe ran with its own variables (`stainshift pipeline run pipelines/<recipe>.toml --set ...`, "
          "the values below) in a project written by the script (`pbc8`: pbc_barcelona, all 8 classes; `pbc`: its "
          "4 white-cell classes of the cross-site benchmark; `jtsc`: jtsc_tecom with its masks); blocks 1-2 with "
          "one benchmark classifier (resnet18) instead of the recipe's four", ""]
    for name in recipes:
        recipe = load_recipe(PIPELINES / f"{name}.toml", sets[name])
        start = time.perf_counter()
        result = run_pipeline(recipe, project, quiet=args.quiet)
        seconds = time.perf_counter() - start
        reports[name] = {"ok": result.ok, "seconds": round(seconds, 1), "variables": recipe.variables,
                         "steps": [vars(s) for s in result.steps]}
        given = " ".join(f"--set {k}={v}" for k, v in sets[name].items())
        md += [f"## `{name}`", "", f"`stainshift pipeline run pipelines/{name}.toml {given}`: "
               f"{'finished' if result.ok else 'FAILED'} in {seconds / 60:.1f} min", "",
               "| step | action | seconds | command |", "|---|---|---:|---|"]
        for step, report in zip(recipe.steps, result.steps, strict=False):
            md.append(f"| {report.name} | {report.action} | {report.seconds:.0f} | `{' '.join(step.command)}` |")
        md.append("")
        if not result.ok:
            md += [f"Stopped: {result.steps[-1].name}: {result.steps[-1].why}", ""]
            continue
        v = recipe.variables
        if name == "paper_block_3":
            pair = f"runs/{v['domain']}.{v['from']}_to_{v['domain']}.{v['to']}/classcyclegan/*/selection.csv"
            figure = block_3_figure(project, project.root / v["out"], 8, RESULTS / f"recipes_{name}.png")
            md += ["The kept epochs' scores from `rare select` (epoch 0 = the inputs; * = chosen):", "",
                   _selection_table(project, pair), ""]
        elif name == "paper_blocks_1_2":
            folder = project.runs / f"{v['src']}_to_{v['dst']}"
            figure = RESULTS / f"recipes_{name}.png"
            figure.write_bytes((folder / "benchmark" / "accuracy_vs_epoch.png").read_bytes())
            md += [f"The benchmark step's summary ({v['src']} test split; `runs/{v['src']}_to_{v['dst']}/benchmark/"
                   "benchmark.md`):", "", *_section(folder / "benchmark" / "benchmark.md", "Summary"), "",
                   "Its selections:", "", *_section(folder / "benchmark" / "benchmark.md", "Selections"), "",
                   f"The report step wrote `runs/{v['src']}_to_{v['dst']}/report/index.html`.", ""]
        else:
            pair = f"runs/{v['domain']}_to_{v['domain']}/{v['method']}/*/selection.csv"
            figure = mask_to_image_figure(project, v["domain"], project.root / v["out"], 8,
                                          RESULTS / f"recipes_{name}.png")
            md += ["The kept epochs' scores from `select` (what chose the generator's epoch):", "",
                   _selection_table(project, pair), ""]
        md += [f"![{name}]({figure.name})", ""]
    meta["seconds"] = sum(r["seconds"] for r in reports.values())
    atomic_write_text(RESULTS / "recipes.json", json.dumps({"provenance": meta, "recipes": reports}, indent=2))
    atomic_write_text(RESULTS / "recipes.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
