"""Intrinsic dimension of a cloud of feature vectors: TwoNN, the Levina-Bickel MLE, and PCA.

* ``two_nn`` (Facco et al. 2017): the ratio ``mu = r2 / r1`` of each point's second to first
  neighbour distance follows a Pareto law of exponent d, so ``-log(1 - F(mu)) = d log(mu)``; d is
  the least-squares slope through the origin on the empirical CDF ``F(mu_(i)) = i / N``, leaving out
  the largest ``discard`` fraction of the ratios (the paper's 10 %).
* ``mle`` (Levina & Bickel 2005): per point ``m_k(x) = (k - 1) / sum_{j<k} log(T_k / T_j)`` from the
  distances ``T_1 <= ... <= T_k`` to its k nearest neighbours, then averaged over points. The
  paper's plain mean (``average="mean"``) runs high by a factor of about ``(k - 1) / (k - 2)``: where
  the density is locally even, ``m_k(x)`` is ``(k - 1) / S`` with ``S ~ Gamma(k - 1, rate d)``,
  whose mean is ``d (k - 1) / (k - 2)`` (5.3 for 5-d data at k = 20). ``average="inverse"``
  (MacKay & Ghahramani's correction, the default, as in scikit-dimension) averages ``1 / m_k``,
  whose mean is ``1 / d``, and so avoids that.
* ``pca_dimension``: how many principal components hold ``variance`` (90 %) of the variance.

Neighbours are exact (``neighbors`` with the L2 metric). A point at distance 0 from its nearest
neighbour (a duplicate) has no ratio or log-distance: such points are dropped with a warning.
``max_points`` estimates on a random subsample of that many points (drawn with ``seed``), as is
common for large N.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> plane = rng.normal(size=(1000, 2)) @ rng.normal(size=(2, 6))  # a 2-d plane in R^6
    >>> round(two_nn(plane), 2), round(mle(plane), 2), round(mle(plane, average="mean"), 2)
    (2.01, 2.04, 2.16)
    >>> pca_dimension(plane)
    2
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from seethrough.errors import InputError
from seethrough.represent.nearest import as_matrix, neighbors

AVERAGES = ("mean", "inverse")


def two_nn(x, discard: float = 0.1, *, max_points: int | None = None, seed: int = 0) -> float:
    """TwoNN estimate (Facco et al. 2017) of the intrinsic dimension of the (N, D) points ``x``.

    ``discard``: the fraction of largest ratios ``r2 / r1`` left out of the fit (the paper's 0.1).
    """
    if not 0 < discard < 1:
        raise InputError(f"discard must be between 0 and 1 (the paper's 0.1), not {discard!r}: "
                         f"the largest ratio has F = 1, where -log(1 - F) is infinite")
    return _two_nn_fit(_distances(_points(x, max_points, seed, 3, "two_nn"), 2), discard)


def _two_nn_fit(distances: np.ndarray, discard: float) -> float:
    """TwoNN from the (N, >= 2) distances to each point's nearest neighbours."""
    r = _without_duplicates(distances[:, :2])
    ratios = np.sort(r[:, 1] / r[:, 0])
    keep = min(int(len(ratios) * (1 - discard)), len(ratios) - 1)
    if keep < 2:
        raise InputError(f"two_nn keeps only {keep} ratios after discarding {discard:.0%} of "
                         f"{len(ratios)}; give more points or a smaller discard")
    log_mu = np.log(ratios[:keep])
    log_survival = -np.log(1 - np.arange(1, keep + 1) / len(ratios))
    return float(log_mu @ log_survival / (log_mu @ log_mu))


def mle(x, k: int | tuple[int, int] = 20, *, average: str = "inverse", max_points: int | None = None,
        seed: int = 0) -> float:
    """Levina-Bickel (2005) maximum-likelihood estimate of the intrinsic dimension of ``x`` (N, D).

    ``k``: neighbours per point, or a range ``(k1, k2)`` whose estimates for k1..k2 are averaged,
    as in the paper (which suggests (10, 20)). ``average`` over points: "inverse" (default;
    MacKay & Ghahramani 2005: the inverse of the mean of the per-point inverses, the maximum
    likelihood for all points together, and scikit-dimension's default) or "mean" (the paper's
    own: the mean of the per-point estimates, each with ``k - 1`` in the normaliser). The mean
    is biased upwards by about ``(k - 1) / (k - 2)`` (5.3 for 5-d data at k = 20); the inverse
    average is not, so it is the default.
    """
    last = _k_range(k)[1]
    return _mle_fit(_distances(_points(x, max_points, seed, last + 1, "mle"), last), k, average)


def _mle_fit(distances: np.ndarray, k, average: str) -> float:
    """Levina-Bickel from the (N, >= k2) distances to each point's nearest neighbours."""
    first, last = _k_range(k)
    if average not in AVERAGES:
        raise InputError(f"unknown average {average!r}; use one of {', '.join(AVERAGES)}")
    log_t = np.log(_without_duplicates(distances[:, :last]))
    return float(np.mean([_levina_bickel(log_t[:, :n], average) for n in range(first, last + 1)]))


def pca_dimension(x, variance: float = 0.9, *, max_points: int | None = None,
                  seed: int = 0) -> int:
    """The number of principal components of ``x`` (N, D) that hold ``variance`` of its variance."""
    if not 0 < variance <= 1:
        raise InputError(f"variance must be a fraction in (0, 1], like 0.9, not {variance!r}")
    data = _points(x, max_points, seed, 2, "pca_dimension")
    centered = data.double() - data.double().mean(dim=0)
    if centered.numel() > LARGE:  # float32 products: several times faster, ample for shares
        centered = centered.float()
    gram = centered.T @ centered if len(centered) >= centered.shape[1] else centered @ centered.T
    spectrum = np.linalg.eigvalsh(gram.double().cpu().numpy())[::-1].clip(0)  # LAPACK: 3x torch
    if spectrum.sum() == 0:
        raise InputError("all points are equal: they have no variance to explain")
    share = np.cumsum(spectrum) / spectrum.sum()
    return int(np.argmax(share >= variance - 1e-10)) + 1


#: above this many values, ``pca_dimension`` forms its Gram matrix in float32
LARGE = 10 ** 7

ESTIMATORS = {"twonn": two_nn, "mle": mle, "pca": pca_dimension}


def intrinsic_dimension(x, method: str = "twonn", **options) -> float:
    """The intrinsic dimension of ``x`` (N, D) by ``method``: "twonn", "mle" or "pca".

    ``options`` go to ``two_nn``, ``mle`` or ``pca_dimension``.
    """
    if method not in ESTIMATORS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[method](x, **options)


def profile(features_by_layer: Mapping[str, object],
            methods: Sequence[str] = ("twonn", "mle", "pca"), *, max_points: int | None = None,
            seed: int = 0):
    """A pandas DataFrame of intrinsic dimensions: one row per layer (in order), one column per
    method, each estimated with its defaults on the layer's (N, D) features. The neighbour
    distances are computed once per layer and shared by TwoNN and MLE."""
    import pandas as pd

    for method in methods:
        if method not in ESTIMATORS:
            raise InputError(f"unknown method {method!r}; use one of {', '.join(ESTIMATORS)}")
    rows = []
    for features in features_by_layer.values():
        neighbours = 20 if "mle" in methods else 2 if "twonn" in methods else 0
        data = _points(features, max_points, seed, max(neighbours + 1, 3), "profile")
        distances = _distances(data, neighbours) if neighbours else None
        fits = {"twonn": lambda: _two_nn_fit(distances, 0.1),
                "mle": lambda: _mle_fit(distances, 20, "inverse"),
                "pca": lambda: pca_dimension(data)}
        rows.append([fits[method]() for method in methods])
    index = pd.Index(list(features_by_layer), name="layer")
    return pd.DataFrame(rows, index=index, columns=list(methods))


def _points(x, max_points: int | None, seed: int, least: int, name: str) -> torch.Tensor:
    """``x`` as a floating matrix, subsampled to ``max_points`` rows; InputError below
    ``least`` rows. (Neighbour distances are ranked in float64 whatever its precision.)"""
    if max_points is not None and (not isinstance(max_points, int) or max_points < 1):
        raise InputError(f"max_points must be a positive integer or None, not {max_points!r}")
    data = as_matrix(x, "x")
    if max_points is not None and len(data) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(len(data), max_points, replace=False))
        data = data[torch.as_tensor(rows, device=data.device)]
    if len(data) < least:
        raise InputError(f"{name} needs at least {least} points, got {len(data)}; "
                         f"give more points (or a larger max_points)")
    return data


def _distances(data: torch.Tensor, k: int) -> np.ndarray:
    """(N, k) distances of each point to its ``k`` nearest other points, ascending."""
    return neighbors(data, k=k, metric="l2").distances.cpu().numpy()


def _without_duplicates(distances: np.ndarray) -> np.ndarray:
    """The rows whose nearest neighbour is not at distance 0, with a warning if any is dropped."""
    duplicate = distances[:, 0] == 0
    if duplicate.any():
        warnings.warn(f"dropped {int(duplicate.sum())} of {len(distances)} points that duplicate "
                      f"another point (nearest neighbour at distance 0)", stacklevel=3)
    return distances[~duplicate]


def _k_range(k) -> tuple[int, int]:
    """(k1, k2) from ``k`` or ``(k1, k2)``, with ``2 <= k1 <= k2``."""
    pair = (k, k) if isinstance(k, int) else tuple(k) if isinstance(k, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(n, int) for n in pair) or not 2 <= pair[0] <= pair[1]:
        raise InputError(f"k must be an integer >= 2 or a range (k1, k2) with 2 <= k1 <= k2, "
                         f"not {k!r}")
    return pair


def _levina_bickel(log_t: np.ndarray, average: str) -> float:
    """The estimate from the log-distances (N, k) to each point's ``k`` nearest neighbours."""
    per_point = (log_t.shape[1] - 1) / (log_t[:, -1:] - log_t[:, :-1]).sum(axis=1)
    return per_point.mean() if average == "mean" else 1 / np.mean(1 / per_point)
