"""Edits for ``Trace(edit=...)``: ablate, scale or replace whole channels of a layer's output.

Channels are dimension 1 (``N, C, ...``). Each function returns an ``output -> output`` edit.

Example:
    >>> import torch
    >>> ablate([0])(torch.ones(1, 2, 2, 2))[0, :, 0, 0].tolist()
    [0.0, 1.0]
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from seethrough.errors import InputError

Edit = Callable[[torch.Tensor], torch.Tensor]


def channel_mask(output: torch.Tensor, channels: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``(1, C, 1, ...)`` True at ``channels`` of ``output``'s dimension 1 (checked in range)."""
    index = torch.as_tensor(channels, dtype=torch.long, device=output.device).reshape(-1)
    if output.dim() < 2:
        raise InputError(f"channel edits need an output with a channel dimension, got {output.dim()}-D")
    if len(index) and (index.min() < -output.shape[1] or index.max() >= output.shape[1]):
        raise InputError(f"channels {index.tolist()} out of range for {output.shape[1]} channels")
    mask = torch.zeros(output.shape[1], dtype=torch.bool, device=output.device)
    mask[index] = True
    return mask.view(1, -1, *([1] * (output.dim() - 2)))


def replace(channels: Sequence[int], value: float | torch.Tensor) -> Edit:
    """Set the given channels to ``value`` (a number or a tensor broadcastable to the output)."""

    def edit(output: torch.Tensor) -> torch.Tensor:
        mask = channel_mask(output, channels)
        return torch.where(mask, torch.as_tensor(value, dtype=output.dtype), output)

    return edit


def ablate(channels: Sequence[int]) -> Edit:
    """Zero the given channels."""
    return replace(channels, 0.0)


def scale(channels: Sequence[int], factor: float) -> Edit:
    """Multiply the given channels by ``factor`` (``factor > 1`` amplifies a unit)."""

    def edit(output: torch.Tensor) -> torch.Tensor:
        mask = channel_mask(output, channels)
        return torch.where(mask, output * factor, output)

    return edit
