"""``harmonize`` split across the processes of ``torchrun --nproc_per_node N -m stainshift harmonize ...``.

Every process (rank) takes the files ``i % world == rank`` of the sorted input list, writes its outputs and a partial
manifest (``.manifest.<rank>-of-<world>.json`` in the output folder); after a gloo barrier that also tells whether
every rank succeeded, rank 0 merges the partials into the one ``manifest.csv`` a single process would have written
(rows sorted by input) and removes them. Only rank 0 shows progress and returns a result. Outside torchrun (no
``WORLD_SIZE`` above 1) :func:`harmonize_distributed` is plain :func:`stainshift.harmonize.harmonize`.

    torchrun --nproc_per_node 4 -m stainshift harmonize --src hgtp --dst clinic --method cyclegan --epoch best
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from stainshift.atomic import atomic_write_text
from stainshift.errors import StainshiftError

if TYPE_CHECKING:
    from stainshift.harmonize import HarmonizeRequest, HarmonizeResult
    from stainshift.project import Project

T = TypeVar("T")


def take(items: Sequence[T], rank: int, world: int) -> list[T]:
    """The share of ``rank`` of ``world``: every ``world``-th item of the sorted list, from ``rank`` (disjoint, and
    together all of them, whatever order ``items`` came in)."""
    return sorted(items, key=str)[rank::world]


def partial_file(out_dir: Path, rank: int, world: int) -> Path:
    return out_dir / f".manifest.{rank}-of-{world}.json"


def write_partial(out_dir: Path, rank: int, world: int, rows: Sequence[dict[str, object]],
                  skipped: Sequence[str]) -> Path:
    """One rank's manifest rows and skipped files, written atomically."""
    path = partial_file(out_dir, rank, world)
    atomic_write_text(path, json.dumps({"rows": list(rows), "skipped": list(skipped)}))
    return path


def merge_partials(out_dir: Path, world: int) -> tuple[Path, int, list[str]]:
    """Merge the ``world`` partial manifests into ``manifest.csv`` and remove them: (manifest, images, skipped)."""
    from stainshift.harmonize import write_manifest

    rows: list[dict[str, object]] = []
    skipped: list[str] = []
    parts = [partial_file(out_dir, rank, world) for rank in range(world)]
    for part in parts:
        if not part.is_file():
            raise StainshiftError(f"{part}: a rank's partial manifest is missing; run the sharded harmonize again")
        data = json.loads(part.read_text())
        rows += data["rows"]
        skipped += data["skipped"]
    manifest = write_manifest(out_dir, rows)
    for part in parts:
        part.unlink()
    return manifest, len(rows), sorted(skipped)


def harmonize_distributed(project: Project, request: HarmonizeRequest) -> HarmonizeResult | None:
    """:func:`~stainshift.harmonize.harmonize` on this torchrun rank's share of the files; rank 0 merges the
    manifest and returns the whole result, the other ranks return None. A plain call outside torchrun."""
    import torch

    from stainshift.harmonize import harmonize
    from stainshift.train import distributed

    info = distributed.from_env()
    if not info.enabled:
        return harmonize(project, request)
    device = request.device
    if device == "auto" and torch.cuda.is_available():  # one GPU per process on a multi-GPU machine
        device = f"cuda:{distributed.local_rank() % torch.cuda.device_count()}"
    mine = dataclasses.replace(request, shard=(info.rank, info.world), device=device,
                               progress=request.progress and info.is_main)
    with distributed.process_group(info, backend="gloo"):  # a barrier and one flag: gloo, on CPU or GPU
        ok = False
        try:
            result = harmonize(project, mine)
            ok = True
        finally:
            everyone = distributed.all_true(ok)  # the barrier: every rank has written its outputs (or failed)
        if not everyone:
            if ok:  # this rank's share is written, but no manifest will cover it: leave no partial behind
                partial_file(result.out_dir, info.rank, info.world).unlink(missing_ok=True)
            raise StainshiftError(f"rank {info.rank}: another rank failed (its error is printed above); nothing "
                                  "was merged, run the command again once it is fixed")
        if not info.is_main:
            return None
        manifest, n_images, skipped = merge_partials(result.out_dir, info.world)
    return dataclasses.replace(result, manifest=manifest, n_images=n_images, skipped=skipped)
