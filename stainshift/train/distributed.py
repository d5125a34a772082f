"""Optional data-parallel training through ``torchrun``: gloo on CPU, NCCL on GPU (and the process group that
sharded ``harmonize`` joins, :mod:`stainshift.shard`).

Each process takes every ``world``-th item of the epoch plan, gradients are averaged with an all-reduce after each
backward pass (the models call ``grad_sync``), and only rank 0 writes files and logs. Without ``torchrun`` (no
``WORLD_SIZE`` in the environment) everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> Dist:
    """Join the process group described by torchrun's environment variables, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size())


def from_env() -> Dist:
    """This process's rank and the world size as torchrun's environment gives them (without joining a group)."""
    return Dist(rank=int(os.environ.get("RANK", "0")), world=int(os.environ.get("WORLD_SIZE", "1")))


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``), e.g. to pick its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0"))


@contextlib.contextmanager
def process_group(info: Dist, backend: str = "gloo") -> Iterator[None]:
    """The torchrun process group for the duration of a ``with`` block (nothing when ``info`` is one process)."""
    joined = info.enabled and not dist.is_initialized()
    if joined:
        dist.init_process_group(backend=backend)
    try:
        yield
    finally:
        if joined:
            dist.destroy_process_group()


def all_true(flag: bool) -> bool:
    """Whether ``flag`` holds on every process (a barrier too: it returns once all have called it)."""
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def all_reduce_grads(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over all processes (flattened into one buffer: one message)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: Dist) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def replicas_agree(module: torch.nn.Module) -> bool:
    """True when every process holds bit-identical parameters (checked at the end of a data-parallel run)."""
    flat = torch.cat([p.detach().reshape(-1).float().cpu() for p in module.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, 0)
    same = torch.tensor([1.0 if torch.equal(flat, reference) else 0.0])
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item() == 1.0)
