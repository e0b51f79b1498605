"""Generic statistics for ``tally``: per-unit moments of a layer, mergeable across shards.

``Moments`` keeps, per unit (channel), the count, mean and sum of squared deviations over every
position of every image, in float64, merged with Chan et al.'s parallel formula, so shards give
the single-run answer to rounding.

Example:
    >>> import torch
    >>> from seethrough.tallying import Batch
    >>> x = torch.randn(6, 2, 3, 3)
    >>> m = Moments("l")
    >>> m.update(Batch(0, torch.arange(6), {"l": x}))
    >>> torch.allclose(m.std, x.transpose(0, 1).reshape(2, -1).std(1).double())
    True
"""
from __future__ import annotations

import torch

from seethrough.tallying import Batch


class Moments:
    """Per-unit count, mean and standard deviation of a layer's output (``(N, K, ...)``)."""

    def __init__(self, layer: str):
        self.layer = layer
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None  # sum of squared deviations from the mean

    def update(self, batch: Batch) -> None:
        a = batch.acts[self.layer]
        values = a.transpose(0, 1).reshape(a.shape[1], -1).double().cpu()
        other = Moments(self.layer)
        other.count = values.shape[1]
        other.mean = values.mean(1)
        other.squares = ((values - other.mean[:, None]) ** 2).sum(1)
        self.merge(other)

    def merge(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.mean, self.squares = other.count, other.mean.clone(), other.squares.clone()
            return self
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * other.count / total
        self.squares = self.squares + other.squares + delta**2 * self.count * other.count / total
        self.count = total
        return self

    @property
    def std(self) -> torch.Tensor:
        """Sample standard deviation per unit (``n - 1`` in the denominator)."""
        return (self.squares / max(1, self.count - 1)).sqrt()

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "squares": self.squares}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.squares = state["count"], state["mean"], state["squares"]
