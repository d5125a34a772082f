"""The image history buffer of Shrivastava et al. (2017), used by CycleGAN's discriminators.

The discriminator sees, for each generated image, either that image or (with probability 1/2 once the buffer is
full) an older generated image that it replaces in the buffer. All random choices come from torch's global RNG, so
restoring ``torch.get_rng_state()`` and the pool's :meth:`ImagePool.state_dict` reproduces them exactly.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """A buffer of up to ``size`` past generated images (``size`` 0 disables it: queries return their input)."""

    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0 (got {size})")
        self.size = size
        self.images: list[torch.Tensor] = []  # each CxHxW, detached float32

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of the same shape as ``images`` (BxCxHxW) mixing new images with stored ones; no gradient."""
        images = images.detach()
        if self.size == 0:
            return images
        out: list[torch.Tensor] = []
        for image in images.float():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()).item() < 0.5:
                index = int(torch.randint(0, self.size, ()).item())
                out.append(self.images[index].to(image.device))
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.stack(out).to(images.dtype)

    def state_dict(self) -> dict[str, Any]:
        stored = torch.stack([im.detach().cpu() for im in self.images]) if self.images else torch.empty(0)
        return {"size": self.size, "images": stored}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["size"]) != self.size:
            raise ValueError(f"image pool of size {state['size']} cannot load into one of size {self.size}")
        stored = state["images"]
        self.images = [im.float().clone() for im in stored] if stored.numel() else []
