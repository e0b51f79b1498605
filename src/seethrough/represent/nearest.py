"""Exact k nearest neighbours of feature vectors, by brute force in bounded memory.

Distances are searched in float32, ``batch_size`` queries at a time (so memory is about
``batch_size x N`` float32 values besides the features), the ``k + 8`` smallest of each query are
recomputed in float64 and ranked with ties broken by the lower index (L2 directly as
``||q - x||``, so duplicate points are exactly 0 apart), and a query whose float32 ranking could
have missed a neighbour is redone in float64 over all rows: the answer is float64 brute force's.
Cosine distance is ``1 - cos``.

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
#: candidates kept beyond k by the float32 pass, re-ranked in float64
MARGIN = 8


@dataclass
class Neighbors:
    """The ``k`` nearest rows of the features for each query, nearest first."""

    indices: torch.Tensor  # (M, k) long: rows of the features
    distances: torch.Tensor  # (M, k) ascending, in the features' floating dtype


def neighbors(features, queries=None, *, k: int = 5, metric: str = "cosine",
              exclude_self: bool | None = None, batch_size: int = 2048) -> Neighbors:
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
    """(indices, float64 distances) of the ``k`` nearest rows of ``data`` to float64 ``queries``.

    A float32 pass picks ``k + MARGIN`` candidates, whose distances are then recomputed in
    float64 and ranked. A row whose ``k``-th float64 distance is not below every left-out
    candidate's float32 distance by more than float32's error is redone in float64 over all
    rows, so the answer is always the float64 brute force's.
    """
    width = min(len(data), k + MARGIN + (rows is not None))
    approx = _pairwise(queries.float(), data.float(), metric)
    if rows is not None:
        approx[torch.arange(len(queries), device=data.device), rows] = torch.inf
    candidates = approx.topk(width, dim=1, largest=False).indices
    exact = _exact(queries, data, candidates, metric)
    if rows is not None:
        exact[candidates == rows[:, None]] = torch.inf
    indices, distances = _by_distance(exact, candidates)
    indices, distances = indices[:, :k], distances[:, :k]
    if width < len(data):
        outside = approx.gather(1, candidates[:, -1:])[:, 0].double()
        unsure = _ranking_distance(distances[:, -1], metric) > outside - _tolerance(queries, data,
                                                                                     metric)
        for row in unsure.nonzero()[:, 0].tolist():
            full = _exact(queries[row:row + 1], data,
                          torch.arange(len(data), device=data.device)[None], metric)
            if rows is not None:
                full[0, rows[row]] = torch.inf
            found, found_distances = _by_distance(full, torch.arange(len(data))[None])
            indices[row], distances[row] = found[0, :k], found_distances[0, :k]
    return indices, distances


def _exact(queries: torch.Tensor, data: torch.Tensor, candidates: torch.Tensor,
           metric: str) -> torch.Tensor:
    """(M, C) float64 distances from each query to its candidate rows: ``1 - cos`` or L2.

    One candidate column at a time, over blocks of queries of about ``2**24`` values, so the
    float64 copies stay small however long the vectors are."""
    out = torch.empty(candidates.shape, dtype=torch.float64, device=data.device)
    rows = max(1, 2 ** 24 // max(1, data.shape[1]))
    for block in chunks(len(queries), rows):
        query = queries[block].double()
        if metric == "cosine":
            query = torch.nn.functional.normalize(query, dim=1)
        for column in range(candidates.shape[1]):
            points = data[candidates[block, column]].double()
            if metric == "cosine":
                cosine = (torch.nn.functional.normalize(points, dim=1) * query).sum(1)
                out[block, column] = (1 - cosine).clamp_min(0)
            else:
                out[block, column] = (points - query).norm(dim=1)
    return out


def _ranking_distance(distance: torch.Tensor, metric: str) -> torch.Tensor:
    """A reported distance in the units ``_pairwise`` ranks by (L2 is ranked squared)."""
    return distance if metric == "cosine" else distance.square()


def _tolerance(queries: torch.Tensor, data: torch.Tensor, metric: str) -> torch.Tensor:
    """A bound on float32's error in ``_pairwise``, per query."""
    dims = queries.shape[1]
    if metric == "cosine":
        return torch.full((len(queries),), 4 * dims * 2.0 ** -23, dtype=torch.float64,
                          device=queries.device)
    scale = queries.square().sum(1) + data.double().square().sum(1).max()
    return 4 * dims * 2.0 ** -23 * scale


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
