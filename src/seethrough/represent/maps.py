"""Low-dimensional maps of feature vectors for plotting: PCA, t-SNE or UMAP, the same under a seed.

Nothing is standardised or scaled: the features go in as they are. Before t-SNE and UMAP, features
with more than ``pca_first`` (default 50) dimensions are reduced to that many principal components,
the usual practice (it drops noise and speeds up the neighbour search); ``pca_first=None`` skips it.

``options`` go to the estimator:

* "pca": ``sklearn.decomposition.PCA`` (``whiten``, ``svd_solver``, ...).
* "tsne": ``sklearn.manifold.TSNE`` (``perplexity``: sklearn's 30, clipped to ``(N - 1) / 3`` for
  small N; ``init``: "pca"; ``max_iter``, ``learning_rate``, ``metric``, ...). ``dims`` above 3
  default to ``method="exact"``, since Barnes-Hut handles at most 3. With ``init="pca"`` the seed
  changes nothing (the descent itself is deterministic); it picks the start with ``init="random"``.
* "umap": ``umap.UMAP`` from umap-learn (``n_neighbors``, ``min_dist``, ``metric``, ...). For
  its default "euclidean" metric and for "cosine", the neighbour graph is the exact one from
  ``neighbors`` (float64-exact brute force, under a second for 10,000 points) handed over as
  ``precomputed_knn``, instead of umap-learn's approximate NN-descent, whose first call in a
  process spends about 100 s compiling with numba on 2 cores. The paper defines the graph on the
  exact k nearest neighbours; NN-descent is umap-learn's approximation of it. Other metrics use
  umap-learn's own search.

Warning:
    Reproducibility costs parallelism: UMAP given a ``random_state`` runs on one thread, and t-SNE
    runs on one OpenMP thread here, because its sum over threads depends on their number.

Example:
    >>> import numpy as np
    >>> points = np.random.default_rng(0).normal(size=(100, 8))
    >>> embed(points, "pca").shape
    (100, 2)
    >>> bool((embed(points, "pca", seed=1) == embed(points, "pca", seed=1)).all())
    True
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.decomposition import PCA

from seethrough.errors import InputError
from seethrough.represent.nearest import as_matrix, neighbors

METHODS = ("pca", "tsne", "umap")


def embed(features, method: str = "pca", *, seed: int = 0, dims: int = 2,
          pca_first: int | None = 50, **options) -> np.ndarray:
    """A float32 (N, dims) map of the (N, D) ``features`` by ``method``: "pca", "tsne" or "umap".

    ``seed`` seeds the method (the same seed gives the same array); ``options`` go to the
    estimator (see the module's docstring).
    """
    x = as_matrix(features, "features").cpu()
    x = x.numpy() if x.dtype == torch.float64 else x.float().numpy()  # half precision too
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    most = min(x.shape) if method == "pca" else len(x) - 1
    if not isinstance(dims, int) or not 1 <= dims <= most:
        raise InputError(f"dims must be an integer from 1 to {most} for {method} on features of "
                         f"shape {x.shape}, not {dims!r}")
    if method == "pca":
        return _pca(x, dims, seed, **options)
    run = _tsne if method == "tsne" else _umap
    return run(_reduce(x, pca_first, seed), dims, seed, **options).astype(np.float32)


def _pca(x: np.ndarray, dims: int, seed: int, **options) -> np.ndarray:
    """The first ``dims`` principal component scores of ``x``."""
    return PCA(**{"n_components": dims, "random_state": seed, **options}) \
        .fit_transform(x).astype(np.float32)


def _reduce(x: np.ndarray, pca_first: int | None, seed: int) -> np.ndarray:
    """``x`` projected on its first ``pca_first`` principal components when it has more columns."""
    if pca_first is None or x.shape[1] <= pca_first:
        return x
    return _pca(x, min(pca_first, len(x)), seed)


def _tsne(x: np.ndarray, dims: int, seed: int, **options) -> np.ndarray:
    """t-SNE with the perplexity clipped for small N, PCA initialisation, one OpenMP thread."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    settings = {"perplexity": min(30.0, (len(x) - 1) / 3), "init": "pca", "random_state": seed,
                "method": "barnes_hut" if dims <= 3 else "exact", **options}
    with threadpool_limits(limits=1, user_api="openmp"):
        return TSNE(n_components=dims, **settings).fit_transform(x)


def _umap(x: np.ndarray, dims: int, seed: int, **options) -> np.ndarray:
    """UMAP seeded with ``random_state=seed`` (single-threaded), on the exact neighbour graph."""
    try:
        import umap
    except ImportError as error:
        raise InputError("method='umap' needs umap-learn: pip install umap-learn") from error
    settings = {"n_components": dims, "random_state": seed, **options}
    metric = settings.get("metric", "euclidean")
    if metric in EXACT_METRICS and "precomputed_knn" not in settings:
        settings["precomputed_knn"] = _exact_graph(x, settings.get("n_neighbors", 15),
                                                   EXACT_METRICS[metric])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="n_jobs value .* overridden to 1")
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        return umap.UMAP(**settings).fit_transform(x)


#: umap-learn's metric names that ``neighbors`` computes exactly
EXACT_METRICS = {"euclidean": "l2", "l2": "l2", "cosine": "cosine"}


def _exact_graph(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """umap-learn's ``precomputed_knn``: each row's ``k`` nearest rows, itself first (int32
    indices and float32 distances, the types its own search returns)."""
    found = neighbors(torch.from_numpy(x), k=min(k, len(x)), metric=metric, exclude_self=False)
    indices, distances = found.indices.numpy(), found.distances.numpy()
    itself = np.arange(len(x))
    # a duplicate row with a lower index ties with the row itself; umap-learn wants itself first
    misplaced = indices[:, 0] != itself
    if misplaced.any():
        rows = np.nonzero(misplaced)[0]
        where = np.argmax(indices[rows] == itself[rows, None], axis=1)
        indices[rows, where], indices[rows, 0] = indices[rows, 0], itself[rows]
    return indices.astype(np.int32), distances.astype(np.float32)
