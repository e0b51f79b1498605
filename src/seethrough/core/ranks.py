"""Rank statistics shared by the families: average ranks and Spearman correlation of maps.

Example:
    >>> import torch
    >>> float(spearman(torch.tensor([[1.0, 2, 3]]), torch.tensor([[10.0, 20, 40]]))[0])
    1.0
"""
from __future__ import annotations

import torch

from seethrough.errors import InputError


def rankdata(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n along the last dimension, ties get their average rank (as scipy's ``rankdata``)."""
    flat = values.reshape(-1, values.shape[-1])
    ranks = torch.empty(flat.shape, dtype=torch.float64, device=values.device)
    for row, out in zip(flat, ranks):
        _, inverse, counts = torch.unique(row, return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).double()
        average = ends - (counts.double() - 1) / 2
        out.copy_(average[inverse])
    return ranks.view(values.shape)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row pair of ``(N, ...)`` tensors; ``NaN`` for a constant row."""
    a, b = a.flatten(1), b.flatten(1)
    if a.shape != b.shape:
        raise InputError(f"cannot correlate maps of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denominator = (ra.norm(dim=1) * rb.norm(dim=1))
    return ((ra * rb).sum(1) / denominator).float()  # 0/0 -> NaN for constant maps
