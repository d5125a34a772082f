"""Batching images of mixed sizes: same-shape groups, in order of first appearance."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def group_by_shape(images: Sequence[Any]) -> dict[tuple[int, ...], list[int]]:
    """Indices of ``images`` (arrays or tensors) grouped by shape, in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    return groups


def shape_batches(images: Sequence[Any], batch_size: int) -> Iterator[list[int]]:
    """Indices of same-shape images in batches of at most ``batch_size``."""
    for indices in group_by_shape(images).values():
        for start in range(0, len(indices), batch_size):
            yield indices[start:start + batch_size]


def stream_shape_batches(items: Iterable[T], shape: Callable[[T], tuple[int, ...]], batch_size: int
                         ) -> Iterator[list[T]]:
    """Batches of same-shape items from a stream: a group is yielded as soon as it holds ``batch_size`` items, the
    partial groups at the end, so at most one batch per shape is held in memory."""
    groups: dict[tuple[int, ...], list[T]] = {}
    for item in items:
        group = groups.setdefault(tuple(shape(item)), [])
        group.append(item)
        if len(group) >= batch_size:
            yield list(group)
            group.clear()
    for group in groups.values():
        if group:
            yield list(group)
