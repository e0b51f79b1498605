"""Exact k nearest neighbours of feature vectors, by brute force in bounded memory.

Distances are computed in float64, ``batch_size`` queries at a time (so memory is about
``batch_size x N`` float64 values besides the features), the ``k`` smallest of each query are kept
with ties broken by the lower index, and L2 distances of the kept ones are recomputed directly as
``||q - x||``, so duplicate points are exactly 0 apart. Cosine distance is ``1 - cos``.

Example:
    >>> import torch
    >>> points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    >>> found = neighbors(points, [0, 2], k=2, metric="l2")
    >>> found.indices
    tensor([[1, 3],
            [1, 0]])
    >>> found.distances
    tensor([[1., 2.],
            [2., 3.]])
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from seethrough.core.batching import chunks
from seethrough.errors import InputError

METRICS = ("cosine", "l2")


@dataclass
class Neighbors:
    """The ``k`` nearest rows of the features for each query, nearest first."""

    indices: torch.Tensor  # (M, k) long: rows of the features
    distances: torch.Tensor  # (M, k) ascending, in the features' floating dtype


def neighbors(features, queries=None, *, k: int = 5, metric: str = "cosine",
              exclude_self: bool | None = None, batch_size: int = 4096) -> Neighbors:
    """The ``k`` nearest rows of ``features`` (N, D) to each query.

    ``queries``: None (every row of ``features``), a 1-D list or tensor of row indices, or (M, D)
    feature vectors. ``exclude_self`` (default: True for row queries, False for vectors) keeps a
    row from being its own neighbour. ``metric``: "cosine" (``1 - cos``) or "l2".
    Results are on the features' device.
    """
    data = as_matrix(features, "features")
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if metric == "cosine" and not (data != 0).any(dim=1).all():
        raise InputError("cosine distance is undefined for all-zero rows of features; "
                         "drop those rows or use metric='l2'")
    rows, points = _query_points(data, queries)
    exclude_self = rows is not None if exclude_self is None else exclude_self
    if exclude_self and rows is None:
        raise InputError("exclude_self=True needs queries given as row indices of features "
                         "(or queries=None)")
    available = len(data) - int(exclude_self)
    if not isinstance(k, int) or not 1 <= k <= available:
        raise InputError(f"k must be an integer from 1 to {available} for {len(data)} features"
                         f"{' (a row is not its own neighbour)' if exclude_self else ''}, not {k!r}")
    found = [_nearest(points[part].double(), data, metric, k, batch_size,
                      rows[part] if exclude_self else None)
             for part in chunks(len(points), batch_size)]
    indices = torch.cat([i for i, _ in found])
    distances = torch.cat([d for _, d in found]).to(data.dtype)
    return Neighbors(indices, distances)


def as_matrix(x, name: str) -> torch.Tensor:
    """``x`` as a finite floating (N, D) tensor (integers become float32); InputError otherwise."""
    x = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if x.ndim != 2:
        raise InputError(f"{name} must be a 2-D (N, D) matrix, not shape {tuple(x.shape)}; "
                         f"flatten each row first (x.flatten(1))")
    if not x.is_floating_point():
        x = x.float()
    if not torch.isfinite(x).all():
        raise InputError(f"{name} has NaN or infinite values; drop or fix those rows first")
    return x


def _query_points(data: torch.Tensor, queries) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(row indices or None, (M, D) query points) from None, row indices or feature vectors."""
    if queries is None:
        rows = torch.arange(len(data), device=data.device)
        return rows, data
    asked = queries if isinstance(queries, torch.Tensor) else torch.as_tensor(np.asarray(queries))
    if asked.ndim == 2:
        points = as_matrix(asked, "queries").to(data.device)
        if points.shape[1] != data.shape[1]:
            raise InputError(f"queries have {points.shape[1]} dimensions but features have "
                             f"{data.shape[1]}; take both from the same layer")
        return None, points
    if asked.ndim != 1 or asked.is_floating_point() or asked.dtype == torch.bool:
        raise InputError(f"queries must be (M, D) feature vectors or a 1-D list of row indices "
                         f"of features, not a {asked.dtype} tensor of shape {tuple(asked.shape)}")
    rows = asked.to(device=data.device, dtype=torch.long)
    if len(rows) and not (0 <= int(rows.min()) and int(rows.max()) < len(data)):
        raise InputError(f"query row indices must be from 0 to {len(data) - 1}")
    return rows, data[rows]


def _nearest(queries: torch.Tensor, data: torch.Tensor, metric: str, k: int, batch_size: int,
             rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, float64 distances) of the ``k`` nearest rows of ``data`` to float64 ``queries``."""
    distance = torch.empty(len(queries), len(data), dtype=torch.float64, device=data.device)
    for part in chunks(len(data), batch_size):
        distance[:, part] = _pairwise(queries, data[part].double(), metric)
    if rows is not None:
        distance[torch.arange(len(queries), device=data.device), rows] = torch.inf
    indices = _smallest(distance, k)
    if metric == "cosine":
        return indices, distance.gather(1, indices)
    exact = torch.stack([(queries - data[indices[:, j]].double()).norm(dim=1)
                         for j in range(k)], dim=1)
    return _by_distance(exact, indices)


def _pairwise(queries: torch.Tensor, points: torch.Tensor, metric: str) -> torch.Tensor:
    """(M, P) distances for ranking: ``1 - cos``, or the squared L2 distance."""
    if metric == "cosine":
        unit = torch.nn.functional.normalize
        return (1 - unit(queries, dim=1) @ unit(points, dim=1).T).clamp_min(0)
    squared = (queries * queries).sum(1, keepdim=True) + (points * points).sum(1) \
        - 2 * queries @ points.T
    return squared.clamp_min(0)


def _smallest(distance: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices of the ``k`` smallest entries of each row, ties to the lower index."""
    kth = distance.topk(k, dim=1, largest=False).values[:, -1:]
    width = int((distance <= kth).sum(dim=1).max())
    candidates = distance.topk(width, dim=1, largest=False).indices
    return _by_distance(distance.gather(1, candidates), candidates)[0][:, :k]


def _by_distance(distance: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, distances) of each row sorted by distance, then by index."""
    by_index = indices.sort(dim=1).indices
    distance, indices = distance.gather(1, by_index), indices.gather(1, by_index)
    order = distance.sort(dim=1, stable=True).indices
    return indices.gather(1, order), distance.gather(1, order)
