"""2-D maps: the same seed gives the same array for PCA, t-SNE and UMAP; options behave as stated."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.decomposition import PCA

from seethrough.errors import InputError
from seethrough.represent.maps import embed

POINTS = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)


@pytest.mark.parametrize("method, n", [("pca", 300), ("tsne", 200)])
def test_the_same_seed_gives_the_same_map(method, n):
    first = embed(POINTS[:n], method, seed=3)
    assert first.shape == (n, 2) and first.dtype == np.float32
    assert np.array_equal(first, embed(POINTS[:n], method, seed=3))


def test_umap_with_the_same_seed_gives_the_same_map():
    first = embed(POINTS, "umap", seed=3)
    assert first.shape == (300, 2) and np.isfinite(first).all()
    assert np.array_equal(first, embed(POINTS, "umap", seed=3))


def test_tsne_seeds_give_different_maps_from_a_random_start():
    points = POINTS[:200]
    start = {"init": "random", "max_iter": 300}
    assert not np.allclose(embed(points, "tsne", seed=0, **start),
                           embed(points, "tsne", seed=1, **start))
    assert np.array_equal(embed(points, "tsne", seed=0, max_iter=300),  # PCA start: seed unused
                          embed(points, "tsne", seed=1, max_iter=300))


def test_pca_gives_the_principal_component_scores():
    centered = POINTS - POINTS.mean(axis=0)
    u, s, _ = np.linalg.svd(centered.astype(np.float64), full_matrices=False)
    np.testing.assert_allclose(np.abs(embed(POINTS, "pca", dims=3)), np.abs(u[:, :3] * s[:3]),
                               rtol=1e-3, atol=1e-3)


def test_tsne_first_reduces_to_pca_first_components():
    reduced = PCA(n_components=50, random_state=0).fit_transform(POINTS[:100]).astype(np.float32)
    through_pca = embed(POINTS[:100], "tsne", pca_first=50, max_iter=250)
    np.testing.assert_allclose(through_pca, embed(reduced, "tsne", pca_first=None, max_iter=250),
                               rtol=1e-4, atol=1e-4)


def test_tsne_clips_the_perplexity_for_a_few_points():
    assert embed(POINTS[:10], "tsne", max_iter=250).shape == (10, 2)  # sklearn's 30 would fail


@pytest.mark.parametrize("call, match", [
    (lambda: embed(POINTS, "isomap"), "unknown method 'isomap'"),
    (lambda: embed(POINTS[:, :3], "pca", dims=4), "dims must be an integer from 1 to 3"),
    (lambda: embed(POINTS[:5], "tsne", dims=5), "dims must be an integer from 1 to 4"),
    (lambda: embed(np.full((4, 2), np.nan)), "NaN or infinite"),
    (lambda: embed(POINTS[0]), "2-D"),
])
def test_bad_input_is_an_input_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_missing_umap_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # makes `import umap` raise ImportError
    with pytest.raises(InputError, match="pip install umap-learn"):
        embed(POINTS, "umap")


def test_umap_graph_is_the_exact_one_with_each_row_first_even_among_duplicates():
    from seethrough.represent.maps import _exact_graph

    points = np.random.default_rng(1).normal(size=(40, 5)).astype(np.float32)
    points[7] = points[3]  # row 7 ties with row 3, which has the lower index
    indices, distances = _exact_graph(points, 6, "l2")
    assert (indices[:, 0] == np.arange(40)).all() and indices.dtype == np.int32
    full = np.linalg.norm(points[:, None] - points[None], axis=2)
    assert np.allclose(np.sort(full, axis=1)[:, :6], distances, atol=1e-5)
    assert 3 in indices[7] and 7 in indices[3]


def test_umap_keeps_two_distant_clusters_apart_and_other_metrics_still_run():
    rng = np.random.default_rng(2)
    points = np.concatenate([rng.normal(size=(60, 6)), rng.normal(size=(60, 6)) + 30])
    points = points.astype(np.float32)
    for metric in ("euclidean", "manhattan"):
        coords = embed(points, "umap", metric=metric)
        gap = np.linalg.norm(coords[:60].mean(0) - coords[60:].mean(0))
        spread = max(coords[:60].std(0).max(), coords[60:].std(0).max())
        assert gap > 3 * spread, metric
