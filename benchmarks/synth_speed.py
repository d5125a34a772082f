"""Speed of synthetic mask generation, and a check that the fast Markov placer samples what the naive one does.

    python benchmarks/synth_speed.py [--quick] [--allow-dirty]   # -> benchmarks/results/synth_speed.md (+ .json)

Speed: ``compose`` of a 1920x1200 mask with 669 red cells of 46 px and no white cells (paper 001: 669 +- 149 red
cells per 1920x1200 image, cell size 46 px), from the simulator's shape database, with

- markov (fast): :class:`stainshift.synth.placement.MarkovPlacer` (local window updates, block sums), median of
  5 seeds after one warm-up call (the warm-up, the first ``compose`` of the process, is reported on its own);
- markov (naive): :class:`NaiveMarkovPlacer` below, the straightforward per-cell implementation of the same math
  (full-field P, excitation, allowed map and cumulative sum for every cell and proposal), 2 seeds;
- graph and uniform layouts for the same spec, and all three layouts on a 640x480 field at the database's
  default counts, as extra rows.

Seconds are per mask and cover all of ``compose`` (placement, records, colour-coded map). Target: the fast
markov median <= 0.6 s for the 1920x1200 / 669-cell spec.

Agreement: Clark-Evans ratio (mean nearest-neighbour distance over its value under complete spatial randomness;
< 1 clustered) of the cell centres (bounding-box centres, no edge correction) on a sparse 1920x1200 field with
150 red cells, for markov fast, markov naive and uniform over several seeds. Markov should be clearly below
uniform, and fast and naive should agree within their seed-to-seed spread.

``--quick``: a smoke run with a smaller field and fewer seeds; prints, writes nothing unless ``--out`` is given.
It refuses a tree with uncommitted changes (``--allow-dirty`` to override); the provenance is read at the start.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from provenance import record, require_clean

import stainshift.synth.masks as masks
from stainshift.errors import StainshiftError
from stainshift.synth.masks import MaskSpec, compose
from stainshift.synth.placement import N_INIT, Layout, clark_evans, markov_sigma
from stainshift.synth.shapes import ShapeDatabase, simulator_database

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_S = 0.6
RED_PX = 46.0
Proposal = tuple[float, float, float] | None


class NaiveMarkovPlacer:
    """Paper 001's adhesion-aware placement computed the obvious way, as the reference for ``MarkovPlacer``.

    Keeps the full ``height x width`` probability map P (float64). P is uniform for the first ``n_init`` cells,
    then the mean of their excitations z, then P(i) = (1 - a_i) P(i-1) + a_i z(l_{i-1}) with a_i = 1/i. z is a
    full-field Gaussian (sigma = cell_size / sqrt(2 ln 2)) around the rounded centre, zero within ``cell_size``
    of it, normalised to sum 1. Proposals are drawn from P times an "allowed" map that is zero inside placed
    cells (radius + 0.45 cell_size) and around rejected spots (radius 2), with ``Generator.choice`` over the
    whole flattened map. Unlike ``MarkovPlacer`` the Gaussian is not cut off at 3 sigma.
    """

    def __init__(self, height: int, width: int, cell_size: float, n_init: int = N_INIT):
        self.h, self.w, self.cell_size, self.n_init = height, width, float(cell_size), int(n_init)
        self.p = np.full((height, width), 1.0 / (height * width))
        self.first = np.zeros((height, width))  # sum of the first n_init excitations
        self.allowed = np.ones((height, width))
        self.yy = np.arange(height, dtype=np.float64)[:, None]
        self.xx = np.arange(width, dtype=np.float64)[None, :]
        self.sigma = markov_sigma(cell_size)
        self.n_placed = 0

    def _d2(self, y: float, x: float) -> np.ndarray:
        cy, cx = round(y), round(x)
        return (self.yy - cy) ** 2 + (self.xx - cx) ** 2

    def _excitation(self, y: float, x: float) -> np.ndarray | None:
        d2 = self._d2(y, x)
        z = np.exp(-d2 / (2.0 * self.sigma**2))
        z[d2 < self.cell_size**2] = 0.0
        total = z.sum()
        return z / total if total > 0 else None

    def _block(self, y: float, x: float, radius: float) -> None:
        r = math.ceil(radius)
        self.allowed[self._d2(y, x) <= r * r] = 0.0

    def propose(self, rng: np.random.Generator) -> Proposal:
        weights = self.allowed if self.n_placed < self.n_init else self.p * self.allowed
        total = weights.sum()
        if total <= 0 and weights is not self.allowed:  # P lies only on occupied pixels: uniform over the rest
            weights, total = self.allowed, self.allowed.sum()
        if total <= 0:
            return None
        k = int(rng.choice(weights.size, p=(weights / total).ravel()))
        y, x = divmod(k, self.w)
        return float(y), float(x), 1.0

    def placed(self, y: float, x: float, radius: float) -> None:
        self.n_placed += 1
        i = self.n_placed
        self._block(y, x, radius + 0.45 * self.cell_size)
        z = self._excitation(y, x)
        if i <= self.n_init:
            if z is not None:
                self.first += z
            if i == self.n_init:
                self.p = self.first / self.n_init
        else:
            a = 1.0 / (i + 1)  # a_{i+1}: P(i+1) from P(i) and z(l_i)
            self.p = (1.0 - a) * self.p + (a * z if z is not None else 0.0)

    def rejected(self, y: float, x: float, radius: float = 2.0) -> None:
        self._block(y, x, radius)


@contextmanager
def naive_markov() -> Iterator[None]:
    """Within the block, ``compose`` places markov layouts with :class:`NaiveMarkovPlacer`."""
    original = masks.make_placer

    def make_naive(layout: Layout, height: int, width: int, n: int, cell_size: float, rng: np.random.Generator,
                   n_init: int = N_INIT, spacing: float = 1.0) -> NaiveMarkovPlacer:
        if layout is not Layout.MARKOV or spacing != 1.0:
            raise StainshiftError(f"the naive placer implements the markov layout without overlaps only, not {layout}")
        return NaiveMarkovPlacer(height, width, cell_size, n_init)

    masks.make_placer = make_naive  # type: ignore[assignment]
    try:
        yield
    finally:
        masks.make_placer = original


@dataclass
class SpeedRow:
    label: str
    field: str
    cells_asked: str
    seeds: list[int]
    seconds: list[float]
    placed: list[int]
    dropped: list[int]
    first_call_s: float | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "median_s": self.median_s}


def time_compose(db: ShapeDatabase, spec: MaskSpec, label: str, seeds: list[int], warmup: bool) -> SpeedRow:
    """Seconds per ``compose`` of ``spec`` for each seed (after one warm-up call on seed 1000 if ``warmup``)."""
    first = None
    if warmup:
        start = time.perf_counter()
        compose(db, spec, np.random.default_rng(1000))
        first = time.perf_counter() - start
    seconds, placed, dropped = [], [], []
    for seed in seeds:
        start = time.perf_counter()
        mask = compose(db, spec, np.random.default_rng(seed))
        seconds.append(time.perf_counter() - start)
        placed.append(len(mask.cells))
        dropped.append(mask.dropped)
    w, h = spec.size
    asked = "default" if spec.red_cells is None else f"{spec.red_cells} red + {spec.white_cells} white"
    row = SpeedRow(label, f"{w}x{h}", asked, seeds, seconds, placed, dropped, first)
    warm = f", first call {first:.3f} s" if first is not None else ""
    print(f"{label:>16} {w}x{h} ({asked}): median {row.median_s:.3f} s over {len(seeds)} seeds{warm}; "
          f"placed {placed}, dropped {dropped}", flush=True)
    return row


def centres(db: ShapeDatabase, spec: MaskSpec, seed: int) -> np.ndarray:
    return compose(db, spec, np.random.default_rng(seed)).centres()


def clark_evans_rows(db: ShapeDatabase, spec: MaskSpec, seeds: int, naive_seeds: int) -> list[dict[str, Any]]:
    w, h = spec.size
    runs = {"markov (fast)": (replace(spec, layout=Layout.MARKOV), seeds, False),
            "markov (naive)": (replace(spec, layout=Layout.MARKOV), naive_seeds, True),
            "uniform": (replace(spec, layout=Layout.UNIFORM), seeds, False)}
    rows = []
    for label, (run_spec, n, naive) in runs.items():
        ratios = []
        for seed in range(n):
            if naive:
                with naive_markov():
                    pts = centres(db, run_spec, seed)
            else:
                pts = centres(db, run_spec, seed)
            ratios.append(clark_evans(pts, h, w))
        sd = statistics.stdev(ratios) if len(ratios) > 1 else float("nan")
        rows.append({"placer": label, "seeds": n, "ratios": ratios, "mean": statistics.fmean(ratios), "sd": sd})
        print(f"Clark-Evans {label:>15}: {rows[-1]['mean']:.3f} +- {sd:.3f} over {n} seeds", flush=True)
    return rows


def markdown(meta: dict[str, Any], speed: list[SpeedRow], summary: dict[str, Any], ce: list[dict[str, Any]],
             ce_spec: MaskSpec) -> str:
    m = meta["machine"]
    lines = [
        "# Synthetic mask generation speed", "",
        f"- started: {meta['started']}, commit {meta['commit']}" + (" (uncommitted changes)" if meta["dirty"] else ""),
        f"- machine: {m['cpu']}, {m['cores']} cores, load {m['load_1min']:.2f}, python {m['python']}, "
        f"numpy {m['numpy']}, opencv {m['opencv']} ({m['opencv_threads']} threads)",
        f"- command: `{meta['command']}`", f"- benchmark seconds: {meta['seconds']:.0f}", "",
        "Seconds per mask for all of `compose` (placement, records, colour-coded map); simulator shape database; "
        "median over the seeds; first call = the warm-up (seed 1000) before them.", "",
        "| placer | field | cells asked | seeds | first call s | median s | min s | max s | placed | dropped |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in speed:
        first = f"{r.first_call_s:.3f}" if r.first_call_s is not None else "-"
        lines.append(f"| {r.label} | {r.field} | {r.cells_asked} | {len(r.seeds)} | {first} | {r.median_s:.3f} | "
                     f"{min(r.seconds):.3f} | {max(r.seconds):.3f} | {_span(r.placed)} | {_span(r.dropped)} |")
    verdict = "n/a (--quick spec)" if summary["meets_target"] is None else \
        ("**yes**" if summary["meets_target"] else "**no**")
    lines += ["", f"- naive / fast (medians, {summary['field']}, {summary['cells']} red cells): "
                  f"**{summary['ratio']:.0f}x** ({summary['naive_s']:.2f} s vs {summary['fast_s']:.3f} s)",
              f"- fast median <= {TARGET_S} s for 1920x1200 / 669 red cells: {verdict}", ""]
    w, h = ce_spec.size
    lines += [f"Clark-Evans ratio of the cell centres, {w}x{h}, {ce_spec.red_cells} red cells of "
              f"{ce_spec.red_px:.0f} px (1 = complete spatial randomness, < 1 clustered; non-overlap and no edge "
              "correction push uniform above 1):", "",
              "| placer | seeds | mean | sd |", "|---|---:|---:|---:|"]
    lines += [f"| {r['placer']} | {r['seeds']} | {r['mean']:.3f} | {r['sd']:.3f} |" for r in ce]
    return "\n".join(lines) + "\n"


def _span(values: list[int]) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: smaller field, fewer seeds, writes nothing")
    parser.add_argument("--allow-dirty", action="store_true", help="measure on a tree with uncommitted changes")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default benchmarks/results/synth_speed.md; none with --quick)")
    args = parser.parse_args()
    try:
        require_clean(args.allow_dirty, "benchmarks/synth_speed.py")
    except StainshiftError as exc:
        sys.exit(str(exc))
    meta = record(vars(args))  # before the work
    meta["machine"].update(opencv=cv2.__version__, opencv_threads=cv2.getNumThreads())
    out = args.out if args.out is not None or args.quick else RESULTS / "synth_speed.md"
    started = time.perf_counter()

    db = simulator_database()
    if args.quick:  # a quarter of the area at the same density
        size, cells, fast_seeds, naive_seeds, ce_size, ce_cells, ce_seeds, ce_naive = (960, 600), 167, 2, 1, \
            (960, 600), 40, 4, 3
    else:
        size, cells, fast_seeds, naive_seeds, ce_size, ce_cells, ce_seeds, ce_naive = (1920, 1200), 669, 5, 2, \
            (1920, 1200), 150, 8, 4
    spec = MaskSpec(size, red_cells=cells, white_cells=0, red_px=RED_PX)
    small = MaskSpec((640, 480))

    fast = time_compose(db, spec, "markov (fast)", list(range(fast_seeds)), warmup=True)
    with naive_markov():
        naive = time_compose(db, spec, "markov (naive)", list(range(naive_seeds)), warmup=False)
    speed = [fast, naive,
             time_compose(db, replace(spec, layout=Layout.GRAPH), "graph", list(range(min(3, fast_seeds))), True),
             time_compose(db, replace(spec, layout=Layout.UNIFORM), "uniform", list(range(fast_seeds)), True)]
    speed += [time_compose(db, replace(small, layout=layout), layout.value, list(range(fast_seeds)), True)
              for layout in Layout]
    summary = {"field": fast.field, "cells": cells, "fast_s": fast.median_s, "naive_s": naive.median_s,
               "ratio": naive.median_s / fast.median_s, "target_s": TARGET_S,
               "meets_target": None if args.quick else fast.median_s <= TARGET_S}
    print(f"naive / fast: {summary['ratio']:.1f}x; fast median {fast.median_s:.3f} s, target <= {TARGET_S} s: "
          f"{summary['meets_target']}", flush=True)

    ce_spec = MaskSpec(ce_size, red_cells=ce_cells, white_cells=0, red_px=RED_PX)
    ce = clark_evans_rows(db, ce_spec, ce_seeds, ce_naive)
    meta["seconds"] = time.perf_counter() - started

    if out is None:
        print("--quick: nothing written")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(meta, speed, summary, ce, ce_spec))
    out.with_suffix(".json").write_text(json.dumps(
        {"provenance": meta, "speed": [r.as_dict() for r in speed], "summary": summary, "clark_evans": ce,
         "clark_evans_spec": {"size": ce_spec.size, "red_cells": ce_cells, "red_px": RED_PX}}, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
