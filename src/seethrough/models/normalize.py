"""The normalization a model expects, as its first module, so every method works on [0, 1] images.

Example:
    >>> import torch
    >>> Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])(torch.ones(1, 3, 1, 1)).flatten().tolist()
    [2.0, 2.0, 2.0]
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean and std are buffers (saved, moved with the model)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.3f}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.3f}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"
