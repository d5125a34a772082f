"""Where cells go in a synthetic field: adhesion-aware Markov placement (paper 001), a graph layout (paper 002),
and uniform placement as the reference.

A placer proposes centres; the composer (:mod:`stainshift.synth.masks`) tries the cell there and tells the placer
whether it landed (:meth:`placed`) or collided (:meth:`rejected`).

Markov placement keeps paper 001's probability map P exactly, without touching the whole map per cell: P is the
weighted sum of local excitations z (a Gaussian with the cell's own area cut out), so it is stored as that sum
plus one global scale, and sampled through per-block sums: a cell costs a few array operations on the pixels
its Gaussian reaches and on the block grid, whatever the field size.
"""

from __future__ import annotations

import math
from enum import StrEnum
from functools import lru_cache

import cv2
import numpy as np

from stainshift.errors import StainshiftError


class Layout(StrEnum):
    MARKOV = "markov"
    GRAPH = "graph"
    UNIFORM = "uniform"


N_INIT = 20  # paper 001: the first 20 cells are placed uniformly
BLOCK = 16


@lru_cache(maxsize=256)
def _disc(radius: int) -> np.ndarray:
    yy, xx = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    disc = yy * yy + xx * xx <= radius * radius
    disc.setflags(write=False)
    return disc


def markov_sigma(cell_size: float) -> float:
    """Paper 001: the excitation's half width at half maximum equals the cell size."""
    return cell_size / math.sqrt(2.0 * math.log(2.0))


class MarkovPlacer:
    """Paper 001's adhesion-aware sampler over an ``height x width`` field of cells about ``cell_size`` wide.

    P(i) is uniform for the first ``n_init`` cells, then the mean of their excitations, then
    P(i) = (1 - a_i) P(i-1) + a_i z(l_{i-1}) with a_i = 1/i. Pixels inside placed cells are never proposed.
    Each z is cut at 3 sigma (98.9% of a 2-D Gaussian's mass) and renormalised, so it stays local.
    ``uniform`` keeps P uniform throughout (the reference layout). ``spacing`` scales the disc around each placed
    centre where no later centre may fall (1: cells of the typical size cannot overlap; smaller: they may).
    """

    def __init__(self, height: int, width: int, cell_size: float, n_init: int = N_INIT, *, uniform: bool = False,
                 spacing: float = 1.0):
        if cell_size <= 1:
            raise StainshiftError(f"cell size {cell_size:.1f} px: cells must be wider than one pixel")
        self.h, self.w, self.cell_size, self.n_init = height, width, float(cell_size), int(n_init)
        self.uniform, self.spacing = uniform, float(spacing)
        self.hb, self.wb = -(-height // BLOCK), -(-width // BLOCK)
        hp, wp = self.hb * BLOCK, self.wb * BLOCK
        self.allowed = np.zeros((hp, wp), np.float32)
        self.allowed[:height, :width] = 1.0
        self.excitation = np.zeros((hp, wp), np.float32)  # P / scale
        self.scale = 1.0
        self.n_placed = 0
        self.bs_allowed = self._block_sums(self.allowed, 0, hp, 0, wp).astype(np.float64)
        self.bs_weight = np.zeros_like(self.bs_allowed)
        sigma = markov_sigma(cell_size)
        radius = math.ceil(3.0 * sigma)
        yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1].astype(np.float64)
        d2 = yy * yy + xx * xx
        kernel = np.exp(-d2 / (2.0 * sigma * sigma))
        kernel[d2 < cell_size * cell_size] = 0.0  # the occupied area around the new cell is cut out
        self.kernel, self.radius = kernel.astype(np.float32), radius

    @staticmethod
    def _block_sums(values: np.ndarray, y0: int = 0, y1: int | None = None, x0: int = 0,
                    x1: int | None = None) -> np.ndarray:
        part = values[y0:y1, x0:x1]
        # an area-average resize by whole blocks is the block mean, and several times faster than a reshape sum
        means = cv2.resize(part, (part.shape[1] // BLOCK, part.shape[0] // BLOCK), interpolation=cv2.INTER_AREA)
        return means * np.float32(BLOCK * BLOCK)

    def _refresh(self, y0: int, y1: int, x0: int, x1: int, allowed_changed: bool = True) -> None:
        """Recompute the block sums of the blocks covering rows y0:y1, columns x0:x1."""
        by0, by1 = y0 // BLOCK, -(-y1 // BLOCK)
        bx0, bx1 = x0 // BLOCK, -(-x1 // BLOCK)
        ys, ye, xs, xe = by0 * BLOCK, by1 * BLOCK, bx0 * BLOCK, bx1 * BLOCK
        if allowed_changed:
            self.bs_allowed[by0:by1, bx0:bx1] = self._block_sums(self.allowed, ys, ye, xs, xe)
        weight = cv2.multiply(self.excitation[ys:ye, xs:xe], self.allowed[ys:ye, xs:xe])
        self.bs_weight[by0:by1, bx0:bx1] = self._block_sums(weight)

    def _uniform_phase(self) -> bool:
        return self.uniform or self.n_placed < self.n_init

    def propose(self, rng: np.random.Generator) -> tuple[float, float, float] | None:
        """A centre (y, x) drawn from P, and a size factor (1 here); None when no free pixel is left."""
        while True:
            weighted = not self._uniform_phase() and self.bs_weight.sum() > 0
            sums = self.bs_weight if weighted else self.bs_allowed
            flat = np.cumsum(sums.ravel())
            total = flat[-1]
            if total <= 0:
                return None
            b = min(int(np.searchsorted(flat, rng.random() * total, side="right")), flat.size - 1)
            by, bx = divmod(b, self.wb)
            ys, xs = by * BLOCK, bx * BLOCK
            cell = self.allowed[ys:ys + BLOCK, xs:xs + BLOCK]
            if weighted:
                cell = cell * self.excitation[ys:ys + BLOCK, xs:xs + BLOCK]
            inner = np.cumsum(cell.ravel(), dtype=np.float64)
            if inner[-1] > 0:
                k = min(int(np.searchsorted(inner, rng.random() * inner[-1], side="right")), inner.size - 1)
                dy, dx = divmod(k, BLOCK)
                return float(ys + dy), float(xs + dx), 1.0
            # float32 block sums can keep a tiny positive total for a block that is empty: recompute it exactly
            self.bs_weight[by, bx] = 0.0 if weighted else self.bs_weight[by, bx]
            self.bs_allowed[by, bx] = self.bs_allowed[by, bx] if weighted else 0.0

    def _block_disc(self, y: float, x: float, radius: float) -> None:
        r = math.ceil(radius)
        cy, cx = round(y), round(x)
        y0, y1 = max(0, cy - r), min(self.h, cy + r + 1)
        x0, x1 = max(0, cx - r), min(self.w, cx + r + 1)
        if y0 >= y1 or x0 >= x1:
            return
        disc = _disc(r)[y0 - cy + r:y1 - cy + r, x0 - cx + r:x1 - cx + r]
        self.allowed[y0:y1, x0:x1][disc] = 0.0
        self._refresh(y0, y1, x0, x1)

    def _excite(self, y: float, x: float, weight: float) -> None:
        r = self.radius
        cy, cx = round(y), round(x)
        y0, y1 = max(0, cy - r), min(self.h, cy + r + 1)
        x0, x1 = max(0, cx - r), min(self.w, cx + r + 1)
        patch = self.kernel[y0 - cy + r:y1 - cy + r, x0 - cx + r:x1 - cx + r]
        total = float(patch.sum(dtype=np.float64))
        if total <= 0:
            return
        self.excitation[y0:y1, x0:x1] += patch * np.float32(weight / total)  # z sums to one over the field
        self._refresh(y0, y1, x0, x1, allowed_changed=False)

    def placed(self, y: float, x: float, radius: float) -> None:
        """Cell ``i`` landed at (y, x) with about ``radius`` pixels: update P to P(i+1)."""
        self.n_placed += 1
        i = self.n_placed
        # no later centre inside this cell, nor so close that a cell of the typical size would overlap it
        self._block_disc(y, x, self.spacing * (radius + 0.45 * self.cell_size))
        if self.uniform:
            return
        if i <= self.n_init:
            self._excite(y, x, 1.0 / self.n_init)  # at i = n_init, P is the mean of the first excitations
        else:
            a = 1.0 / (i + 1)  # P(i+1) = (1 - a) P(i) + a z(l_i), kept as scale * excitation
            self.scale *= 1.0 - a
            self._excite(y, x, a / self.scale)

    def rejected(self, y: float, x: float, radius: float = 2.0) -> None:
        """The cell did not fit at (y, x): that spot is not proposed again."""
        self._block_disc(y, x, radius)


class GraphPlacer:
    """Paper 002's layout: the nodes of a Dorogovtsev-Goltsev-Mendes graph laid out in 3-D by ForceAtlas2;
    x, y give the centre and z the size (a factor between ``1 - size_spread`` and ``1 + size_spread``).

    The graph has the smallest generation with at least ``n`` nodes, at most generation 6 (366 nodes: ForceAtlas2
    takes 1.6 s there and 15 s at generation 7 on 2 cores); more cells are split over several graphs, each in its
    own tile of the field. ``n`` nodes are drawn at random. ForceAtlas2 packs hub neighbourhoods tighter than a
    cell: a cell that does not fit at its node is tried at random spots ever further around it (a quarter cell
    further per try, ``tries`` times), then dropped (30 tries leave about 10% of a dense 640x480 field out, 12
    about 25%).
    """

    MAX_NODES = 366

    def __init__(self, height: int, width: int, n: int, cell_size: float, rng: np.random.Generator,
                 size_spread: float = 0.15, tries: int = 30):
        if n < 1:
            raise StainshiftError(f"graph layout of {n} cells: pass --cells >= 1")
        graphs = -(-n // self.MAX_NODES)
        cols = max(1, round(math.sqrt(graphs * width / height)))
        rows = -(-graphs // cols)
        sizes = [n // graphs + (k < n % graphs) for k in range(graphs)]
        points, self.edges = [], []
        for k, m in enumerate(sizes):
            r, c = divmod(k, cols)
            tile = (r * height / rows, c * width / cols, height / rows, width / cols)
            pts, edges = _graph_points(m, tile, cell_size, size_spread, rng)
            self.edges += [(a + len(points), b + len(points)) for a, b in edges]
            points.extend(pts)
        self.points = np.asarray(points, np.float64)
        self.h, self.w, self.cell_size, self.tries = height, width, float(cell_size), int(tries)
        self.next, self.attempt = 0, 0

    def propose(self, rng: np.random.Generator) -> tuple[float, float, float] | None:
        if self.next >= len(self.points):
            return None
        y, x, z = self.points[self.next]
        if self.attempt > 0:  # jitter around the node, further each time
            r = self.cell_size * 0.25 * self.attempt
            a = rng.uniform(0, 2 * math.pi)
            y, x = y + r * math.sin(a), x + r * math.cos(a)
        return float(np.clip(y, 0, self.h - 1)), float(np.clip(x, 0, self.w - 1)), float(z)

    def placed(self, y: float, x: float, radius: float) -> None:
        self.next, self.attempt = self.next + 1, 0

    def rejected(self, y: float, x: float, radius: float = 2.0) -> None:
        self.attempt += 1
        if self.attempt > self.tries:
            self.next, self.attempt = self.next + 1, 0


def _graph_points(n: int, tile: tuple[float, float, float, float], cell_size: float, size_spread: float,
                  rng: np.random.Generator) -> tuple[list[tuple[float, float, float]], list[tuple[int, int]]]:
    """``n`` (y, x, size) points of one laid-out graph inside ``tile`` (top, left, height, width), and the edges
    among them (indices into the points)."""
    import networkx as nx

    generation = 1
    while (3 ** generation + 3) // 2 < n:
        generation += 1
    graph = nx.dorogovtsev_goltsev_mendes_graph(generation)
    pos = nx.forceatlas2_layout(graph, max_iter=200, dim=3, seed=int(rng.integers(2**31)))
    nodes = list(graph.nodes())
    chosen = sorted(int(k) for k in rng.choice(len(nodes), size=n, replace=False))
    index = {nodes[k]: i for i, k in enumerate(chosen)}
    xyz = np.asarray([pos[nodes[k]] for k in chosen], np.float64)
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    unit = (xyz - lo) / np.where(hi > lo, hi - lo, 1.0)
    top, left, th, tw = tile
    margin = min(0.5 * cell_size, 0.25 * min(th, tw))
    pts = [(top + margin + u[1] * max(th - 2 * margin, 1.0), left + margin + u[0] * max(tw - 2 * margin, 1.0),
            1.0 + size_spread * (2.0 * u[2] - 1.0)) for u in unit]
    edges = [(index[a], index[b]) for a, b in graph.edges() if a in index and b in index]
    return pts, edges


def make_placer(layout: Layout, height: int, width: int, n: int, cell_size: float, rng: np.random.Generator,
                n_init: int = N_INIT, spacing: float = 1.0) -> MarkovPlacer | GraphPlacer:
    if layout is Layout.MARKOV:
        return MarkovPlacer(height, width, cell_size, n_init, spacing=spacing)
    if layout is Layout.UNIFORM:
        return MarkovPlacer(height, width, cell_size, uniform=True, spacing=spacing)
    return GraphPlacer(height, width, n, cell_size, rng)


def clark_evans(centres: np.ndarray, height: int, width: int) -> float:
    """The Clark-Evans ratio of a point pattern: mean nearest-neighbour distance over its expectation under
    complete spatial randomness (1 for independent points, < 1 for clustered ones). No edge correction, and cells
    that may not overlap space their centres out, so uniformly placed cells score above 1: compare layouts with
    each other, not with 1."""
    from scipy.spatial import cKDTree

    if len(centres) < 2:
        return float("nan")
    d, _ = cKDTree(centres).query(centres, k=2)
    expected = 0.5 / math.sqrt(len(centres) / (height * width))
    return float(d[:, 1].mean() / expected)
