"""Intrinsic dimension on manifolds whose dimension is known, and against scikit-dimension.

The Levina-Bickel per-point estimate is ``(k - 1) / S`` with ``S ~ Gamma(k - 1, rate d)`` on
locally uniform data, whose mean is ``d (k - 1) / (k - 2)``: the paper's plain mean
(``average="mean"``) is checked against that value, the inverse average (MacKay & Ghahramani,
``mle``'s default) against d.
"""
from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from sklearn.datasets import make_swiss_roll

from seethrough.errors import InputError
from seethrough.represent.dimension import (
    intrinsic_dimension,
    mle,
    pca_dimension,
    profile,
    two_nn,
)

MEAN_BIAS = 19 / 18  # (k - 1) / (k - 2) at the default k = 20


@cache
def subspace(n: int = 2000) -> np.ndarray:
    """Gaussian points of a 5-d linear subspace of R^10 (random orthonormal basis)."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(10, 5)))[0]
    return rng.normal(size=(n, 5)) @ basis.T


@cache
def swiss_roll() -> np.ndarray:
    return make_swiss_roll(2000, random_state=0)[0]


@cache
def sphere() -> np.ndarray:
    """The 3-sphere S^3 in R^4, rotated into R^6."""
    rng = np.random.default_rng(1)
    points = rng.normal(size=(2000, 4))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points @ np.linalg.qr(rng.normal(size=(6, 4)))[0].T


@cache
def cube() -> np.ndarray:
    return np.random.default_rng(2).uniform(size=(2000, 8))


def test_a_5d_subspace_of_r10():
    x = subspace()
    assert two_nn(x) == pytest.approx(5, abs=0.3)
    assert mle(x) == pytest.approx(5, abs=0.3)
    assert mle(x, average="mean") == pytest.approx(5 * MEAN_BIAS, abs=0.3)
    assert pca_dimension(x) == 5
    assert pca_dimension(x, variance=1.0) == 5  # rank 5, despite rounding in the other 5


def test_a_swiss_roll_is_2d():
    x = swiss_roll()
    assert two_nn(x) == pytest.approx(2, abs=0.2)
    assert mle(x) == pytest.approx(2, abs=0.2)
    assert mle(x, average="mean") == pytest.approx(2, abs=0.2)
    assert pca_dimension(x) == 3  # the roll fills 3-d space linearly


@pytest.mark.parametrize("data", [subspace, swiss_roll], ids=["subspace", "swiss_roll"])
def test_agrees_with_scikit_dimension(data):
    """Same options: TwoNN discards 10 % and fits a line; MLE uses k = 20, (k - 1) normaliser,
    no noise model; skdim's comb="mean" is our average="mean", its default comb="mle" ours
    average="inverse"."""
    import skdim  # a dev dependency

    x = data()
    assert two_nn(x, discard=0.1) == pytest.approx(
        skdim.id.TwoNN(discard_fraction=0.1).fit(x).dimension_, rel=0.05)
    for average, comb in [("mean", "mean"), ("inverse", "mle")]:
        assert mle(x, 20, average=average) == pytest.approx(
            skdim.id.MLE().fit(x, n_neighbors=20, comb=comb).dimension_, rel=0.05)


def test_held_out_a_3_sphere_in_r6():
    x = sphere()
    assert two_nn(x) == pytest.approx(3, abs=0.3)
    assert mle(x) == pytest.approx(3, abs=0.3)
    assert mle(x, average="mean") == pytest.approx(3 * MEAN_BIAS, abs=0.3)
    assert pca_dimension(x) == 4  # S^3 spans R^4


def test_held_out_an_8d_cube():
    """The cube's faces make neighbourhoods look smaller: nearest-neighbour estimators run low
    in 8-d at N = 2000 (about 7), PCA finds all 8 equal directions."""
    x = cube()
    assert 6.5 <= two_nn(x) <= 8.5
    assert 6.5 <= mle(x) <= 8.5 and 6.5 <= mle(x, average="mean") <= 8.5
    assert pca_dimension(x) == 8


def test_a_k_range_averages_the_estimates_over_k():
    x = subspace(500)
    expected = np.mean([mle(x, k) for k in (10, 11, 12)])
    assert mle(x, (10, 12)) == pytest.approx(expected, rel=1e-12)


def test_duplicate_points_are_dropped_with_a_warning():
    x = subspace(500)
    doubled = np.concatenate([x, x[:10]])
    with pytest.warns(UserWarning, match="dropped 20 of 510 points"):
        with_duplicates = two_nn(doubled)
    assert with_duplicates == pytest.approx(two_nn(x), abs=0.3)  # copies still neighbour others
    with pytest.warns(UserWarning, match="dropped 20"):
        mle(doubled)


def test_max_points_estimates_on_a_seeded_subsample():
    x = subspace()
    small = two_nn(x, max_points=500, seed=1)
    assert small == two_nn(x, max_points=500, seed=1)
    rows = np.sort(np.random.default_rng(1).choice(len(x), 500, replace=False))
    assert small == pytest.approx(two_nn(x[rows]), rel=1e-12)
    assert small == pytest.approx(5, abs=0.6)


def test_pca_dimension_counts_components_to_the_variance():
    # variances 18, 8, 2 (out of 28) along the three axes: 64 %, 93 %, 100 % cumulated
    x = np.array([[3, 0, 0], [-3, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 1], [0, 0, -1]], float)
    assert [pca_dimension(x, v) for v in (0.6, 0.9, 0.95, 1.0)] == [1, 2, 3, 3]
    wide = x @ np.linalg.qr(np.random.default_rng(0).normal(size=(20, 3)))[0].T  # N < D
    assert [pca_dimension(wide, v) for v in (0.6, 0.9, 0.95, 1.0)] == [1, 2, 3, 3]


def test_the_dispatcher_and_the_layer_profile():
    layers = {"conv": subspace(500), "fc": swiss_roll()[:500]}
    table = profile(layers)
    assert list(table.index) == ["conv", "fc"] and table.index.name == "layer"
    assert list(table.columns) == ["twonn", "mle", "pca"]
    assert table.loc["conv", "twonn"] == two_nn(layers["conv"])
    assert table.loc["fc", "mle"] == intrinsic_dimension(layers["fc"], "mle") == mle(layers["fc"])
    assert table.loc["fc", "pca"] == pca_dimension(layers["fc"])
    assert list(profile(layers, methods=["pca"]).columns) == ["pca"]


@pytest.mark.parametrize("call, match", [
    (lambda: two_nn(np.eye(2)), "two_nn needs at least 3 points, got 2"),
    (lambda: mle(np.eye(20)), "mle needs at least 21 points, got 20"),
    (lambda: pca_dimension(np.ones((1, 3))), "pca_dimension needs at least 2 points"),
    (lambda: two_nn(np.eye(5), max_points=2), "two_nn needs at least 3 points"),
    (lambda: two_nn(np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 1.0]])), "NaN or infinite"),
    (lambda: mle(np.full((30, 2), np.inf)), "NaN or infinite"),
    (lambda: two_nn(subspace(500), discard=0), "discard must be between 0 and 1"),
    (lambda: mle(subspace(500), k=1), "k must be an integer >= 2"),
    (lambda: mle(subspace(500), k=(20, 10)), "k must be"),
    (lambda: mle(subspace(500), average="median"), "unknown average 'median'"),
    (lambda: pca_dimension(subspace(500), variance=90), "variance must be a fraction"),
    (lambda: pca_dimension(np.ones((5, 3))), "all points are equal"),
    (lambda: two_nn(subspace(500), max_points=0), "max_points must be a positive integer"),
    (lambda: intrinsic_dimension(subspace(500), "correlation"), "unknown method 'correlation'"),
    (lambda: two_nn(np.ones(10)), "2-D"),
])
def test_bad_input_is_an_input_error(call, match):
    with pytest.raises(InputError, match=match):
        call()
