"""An exponential moving average of a network's weights (Polyak averaging), as a module that saves and resumes."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage(nn.Module):
    """``average`` holds ``decay * average + (1 - decay) * weights`` after each :meth:`update`.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the first steps are not
    dominated by the initial weights; ``n`` is a buffer, so a saved state resumes exactly. Buffers of the network
    (e.g. batch-norm statistics) are copied, not averaged.
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.average = copy.deepcopy(network).requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        n = int(self.updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        for mine, theirs in zip(self.average.parameters(), network.parameters(), strict=True):
            mine.lerp_(theirs.detach(), 1.0 - decay)
        for mine, theirs in zip(self.average.buffers(), network.buffers(), strict=True):
            mine.copy_(theirs)
        self.updates += 1

    @torch.no_grad()
    def reset(self, network: nn.Module) -> None:
        """Start the average afresh from ``network``'s weights (e.g. after loading initial weights into it)."""
        self.average.load_state_dict(network.state_dict())
        self.updates.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.average(x)
