"""How concentrated is a map? Two scores of the map alone, no model (Quantus' "complexity").

* ``sparseness`` (Chalasani et al. 2020): the Gini index of ``|map|`` over the pixels, in
  [0, 1): 0 for a constant map, ``1 - 1/n`` (the largest) for a map with one non-zero pixel.
  Higher is better (a sparser, more selective map).
* ``complexity`` (Bhatt et al. 2020): the entropy of ``|map| / sum |map|`` (natural log), in
  [0, log n]: 0 for one non-zero pixel, ``log n`` for a uniform map. Lower is better.

Quantus' ``Sparseness`` adds 1e-7 to every value before the Gini index, and its ``Complexity``
adds 1e-12 inside the log; both normalise the map by its maximum first (``normalise=True``),
which changes neither score here. A map of zeros scores 0 for both (Quantus: ~0 and NaN).

Example:
    >>> import torch
    >>> one = torch.zeros(1, 4, 4); one[0, 1, 2] = 3.0
    >>> round(float(sparseness(one)[0]), 4), round(float(complexity(torch.ones(1, 4, 4))[0]), 4)
    (0.9375, 2.7726)
"""
from __future__ import annotations

import torch

from seethrough.core.inputs import as_maps


def _magnitudes(maps) -> torch.Tensor:
    tensor = getattr(maps, "maps", maps)
    size = tuple(getattr(tensor, "shape", (0, 0))[-2:])
    return as_maps(maps, size=size).flatten(1).abs().double()


def sparseness(maps) -> torch.Tensor:
    """Gini index of ``|map|`` per map ``(N,)`` (Chalasani et al. 2020); higher is sparser.

    ``G = sum_i (2 i - n - 1) a_(i) / (n sum_i a_(i))`` with ``a_(1) <= ... <= a_(n)`` sorted.
    """
    values = _magnitudes(maps).sort(dim=1).values
    n = values.shape[1]
    weights = 2 * torch.arange(1, n + 1, dtype=values.dtype, device=values.device) - n - 1
    total = values.sum(1)
    gini = (values * weights).sum(1) / (n * total.clamp(min=1e-300))
    return torch.where(total > 0, gini, torch.zeros_like(gini)).float()


def complexity(maps) -> torch.Tensor:
    """Entropy of ``|map| / sum |map|`` per map ``(N,)`` (Bhatt et al. 2020); lower is simpler."""
    values = _magnitudes(maps)
    total = values.sum(1, keepdim=True)
    share = values / total.clamp(min=1e-300)
    terms = torch.where(share > 0, share * share.clamp(min=1e-300).log(), torch.zeros_like(share))
    return torch.where(total[:, 0] > 0, -terms.sum(1), torch.zeros_like(total[:, 0])).float()


__all__ = ["complexity", "sparseness"]
