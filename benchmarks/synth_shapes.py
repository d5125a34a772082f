"""Shape databases of the real sites and the simulator, the red-cell statistics of bccd_voc, example layouts.

    python benchmarks/synth_shapes.py        # -> benchmarks/results/synth_shapes.md + contact sheets + layouts.png

- jtsc_tecom and cellavision_blog through the command a user runs: ``stainshift --project
  benchmarks/real_sites.toml synth shapes --domain jtsc|cvblog`` (their masks/<class>/ folders);
- bccd's 367 smear-field masks (noisy values, quantised), each field's class from its labelled crop;
- the simulator's cells;
- red-cell counts and sizes from the 364 bccd_voc annotations (the figures `BCCD_FIELD_STATS` holds);
- example masks: Markov, graph and uniform layouts of one 640x480 bccd-scale field, paper 001's 1920x1200
  red-cell field (669 cells of 46 px), single-cell crops, and simulator renders of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from provenance import record, require_clean
from synthesis import bccd_site, data_root

from stainshift.cli.main import main as stainshift
from stainshift.project import load_project
from stainshift.synth.masks import MaskSpec, compose
from stainshift.synth.placement import Layout, clark_evans
from stainshift.synth.render import render_mask
from stainshift.synth.shapes import (
    BCCD_FIELD_STATS,
    build_database,
    contact_sheet,
    domain_database,
    field_stats_from_voc,
    simulator_database,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PROJECT = HERE / "real_sites.toml"


def _semantic_rgb(semantic: np.ndarray) -> np.ndarray:
    lut = np.array([[255, 255, 255], [230, 150, 150], [120, 170, 240], [90, 20, 120]], np.uint8)
    return lut[semantic]


def _tile(images: list[np.ndarray], height: int) -> np.ndarray:
    scaled = [cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height), interpolation=cv2.INTER_AREA)
              for im in images]
    gap = np.full((height, 6, 3), 255, np.uint8)
    out = []
    for s in scaled:
        out += [s, gap]
    return np.concatenate(out[:-1], axis=1)


def _label(row: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((20, row.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, row], axis=0)


def _paper_field(db, layout: Layout, cells: int, seeds: int = 4) -> tuple[list[float], np.ndarray]:
    """Clark-Evans ratios of paper 001's 1920x1200 field (46 px red cells) over seeds, and seed 0's colour mask."""
    ratios, first = [], None
    for seed in range(seeds):
        m = compose(db, MaskSpec((1920, 1200), layout=layout, red_cells=cells, white_cells=0, red_px=46),
                    np.random.default_rng(seed))
        ratios.append(clark_evans(m.centres(), 1200, 1920))
        first = m.colour if first is None else first
    return ratios, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--allow-dirty", action="store_true")
    args = parser.parse_args()
    require_clean(args.allow_dirty, "synth_shapes.py")
    prov = record({})
    root = data_root()
    RESULTS.mkdir(exist_ok=True)
    os.chdir(HERE.parent)

    databases = {}
    for domain in ("jtsc", "cvblog"):
        code = stainshift(["synth", "shapes", "--domain", domain, "--project", str(PROJECT), "--quiet",
                           "--sheet", str(RESULTS / f"synth_shapes_{domain}.png")])
        if code != 0:
            sys.exit(f"synth shapes --domain {domain} failed")
        databases[domain] = domain_database(load_project(PROJECT), domain)  # the cache the command wrote
    site = bccd_site(root)
    databases["bccd fields"] = build_database("bccd fields", [(m, c) for _, m, c in site.items])
    databases["simulator"] = simulator_database()
    cv2.imwrite(str(RESULTS / "synth_shapes_bccd.png"),
                cv2.cvtColor(contact_sheet(databases["bccd fields"]), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(RESULTS / "synth_shapes_simulator.png"),
                cv2.cvtColor(contact_sheet(databases["simulator"]), cv2.COLOR_RGB2BGR))
    voc = field_stats_from_voc(root / "bccd_voc" / "annotations")

    # example layouts at the bccd fields' scale (red cells sized from the bccd_voc boxes, as benchmarks/synthesis.py)
    bccd = databases["bccd fields"]
    red_px = voc.red_to_white_diameter * voc.white_px
    rows, layout_stats = [], {}
    for layout in Layout:
        spec = MaskSpec((640, 480), layout=layout, red_px=red_px, red_cells=40 if layout is Layout.GRAPH else None)
        rng = np.random.default_rng(3)
        m = compose(bccd, spec, rng)
        image = render_mask(m, "site3", rng, white_px=bccd.diameter())
        rows.append(_label(_tile([m.colour, _semantic_rgb(m.semantic), image], 200),
                           f"bccd-scale field, {layout} layout: colour-coded | semantic | simulator render (site3); "
                           f"{len(m.cells)} cells"))
    for layout in (Layout.MARKOV, Layout.UNIFORM):
        ce, dense = _paper_field(databases["simulator"], layout, 669)
        sparse, loose = _paper_field(databases["simulator"], layout, 150)
        tiles = [dense, loose]
        layout_stats[str(layout)] = {"clark_evans_669": [round(v, 3) for v in ce],
                                     "clark_evans_150": [round(v, 3) for v in sparse]}
        rows.append(_label(_tile(tiles, 240), f"paper 001's field, 1920x1200, 46 px red cells, {layout}: 669 cells | "
                                              f"150 cells (Clark-Evans {np.mean(sparse):.2f})"))
    crops = []
    for domain, hospital in (("jtsc", "hgtp"), ("cvblog", "clinic")):
        db = databases[domain]
        for seed in range(4):
            rng = np.random.default_rng(seed)
            side = round(db.diameter() * 1.6)
            m = compose(db, MaskSpec((side, side), crop=True), rng)
            crops += [m.colour, render_mask(m, hospital, rng, white_px=db.diameter())]
    rows.append(_label(_tile(crops, 110), "single-cell crops from jtsc (hgtp render) and cvblog (clinic render) "
                                          "shapes: colour-coded | render"))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 10), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    cv2.imwrite(str(RESULTS / "synth_layouts.png"), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))

    lines = ["# Cell-shape databases, red-cell statistics and example layouts", "",
             f"Commit {prov['commit']} (dirty: {prov['dirty']}), started {prov['started']}.",
             f"Command: `{prov['command']}`.", "",
             "## Shapes per class", "",
             "| source | " + " | ".join(["class", "shapes", "median diameter (px)", "left out"]) + " |",
             "|---|---|---|---|---|"]
    for name, db in databases.items():
        for cls, n in db.counts().items():
            lines.append(f"| {name} | {cls} | {n} | {db.diameter(cls):.1f} | {db.skipped.get(cls, 0)} |")
    lines += ["", "Left out: components cut by the image border (not a whole outline) and specks under "
              f"{40} px. Red-cell outlines are ellipses sized from the field statistics (no real red-cell masks "
              "in the shared data).", "",
              "Contact sheets: [jtsc](synth_shapes_jtsc.png), [cvblog](synth_shapes_cvblog.png), "
              "[bccd fields](synth_shapes_bccd.png), [simulator](synth_shapes_simulator.png).", "",
              "## Red cells per field (bccd_voc boxes)", "",
              "| statistic | measured now | built in (`BCCD_FIELD_STATS`) |", "|---|---|---|"]
    for key in ("red_mean", "red_sd", "red_to_white_diameter", "white_mean", "white_px"):
        lines.append(f"| {key} | {getattr(voc, key):.3f} | {getattr(BCCD_FIELD_STATS, key):.3f} |")
    lines += ["", f"Fields of {voc.field_size[0]}x{voc.field_size[1]}; {voc.source}. The boxes miss red cells in "
              "crowded fields, so synthetic fields drawn from these counts are sparser than many real ones.", "",
              "## Layouts", "",
              "Clark-Evans ratio (nearest-neighbour distance over its value for independent points; lower = more "
              "clustered; cells that may not overlap push even uniform placement above 1):", "",
              "| layout | 669 cells (paper 001's density) | 150 cells |", "|---|---|---|"]
    for layout, s in layout_stats.items():
        lines.append(f"| {layout} | {np.mean(s['clark_evans_669']):.3f} +- {np.std(s['clark_evans_669']):.3f} | "
                     f"{np.mean(s['clark_evans_150']):.3f} +- {np.std(s['clark_evans_150']):.3f} |")
    lines += ["", "At paper 001's density the field is about half covered and both layouts are packed alike; "
              "adhesion shows in sparser fields.", "", "![layouts](synth_layouts.png)", ""]
    (RESULTS / "synth_shapes.md").write_text("\n".join(lines))
    (RESULTS / "synth_shapes.json").write_text(json.dumps({
        "provenance": prov, "voc": asdict(voc), "layouts": layout_stats,
        "databases": {n: {"counts": db.counts(), "skipped": db.skipped, "sources": db.sources,
                          "diameters": {c: db.diameter(c) for c in db.counts()}} for n, db in databases.items()},
    }, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
