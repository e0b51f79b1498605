"""Exact nearest neighbours equal a brute-force reference for both metrics and every query form."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seethrough.errors import InputError
from seethrough.represent.nearest import neighbors

FEATURES = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))


def brute_force(features, queries, metric, k, own_rows=None):
    """(indices, distances): the full float64 distance matrix sorted stably (ties to lower index)."""
    f, q = features.double(), queries.double()
    if metric == "l2":
        distance = torch.cdist(q, f, compute_mode="donot_use_mm_for_euclid_dist")
    else:
        distance = 1 - (q / q.norm(dim=1, keepdim=True)) @ (f / f.norm(dim=1, keepdim=True)).T
    if own_rows is not None:
        distance[torch.arange(len(q)), own_rows] = torch.inf
    order = distance.sort(dim=1, stable=True).indices[:, :k]
    return order, distance.gather(1, order)


@pytest.mark.parametrize("batch_size", [7, 4096])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_feature_queries_equal_brute_force(metric, batch_size):
    queries = torch.randn(40, 16, generator=torch.Generator().manual_seed(1))
    found = neighbors(FEATURES, queries, k=6, metric=metric, batch_size=batch_size)
    indices, distances = brute_force(FEATURES, queries, metric, 6)
    assert found.indices.dtype == torch.long and found.distances.dtype == torch.float32
    assert torch.equal(found.indices, indices)
    torch.testing.assert_close(found.distances.double(), distances, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch_size", [7, 4096])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_index_queries_leave_out_the_query_itself(metric, batch_size):
    rows = torch.tensor([5, 0, 299, 17, 5])
    found = neighbors(FEATURES, rows, k=4, metric=metric, batch_size=batch_size)
    indices, distances = brute_force(FEATURES, FEATURES[rows], metric, 4, own_rows=rows)
    assert torch.equal(found.indices, indices)
    assert not (found.indices == rows[:, None]).any()
    torch.testing.assert_close(found.distances.double(), distances, rtol=1e-6, atol=1e-6)
    every = neighbors(FEATURES, k=4, metric=metric, batch_size=batch_size)  # queries=None
    assert torch.equal(every.indices[rows], found.indices)


def test_list_queries_and_numpy_features_give_the_same():
    found = neighbors(FEATURES.double().numpy(), [3, 1], k=3, metric="l2")
    assert torch.equal(found.indices, neighbors(FEATURES, torch.tensor([3, 1]), k=3,
                                                metric="l2").indices)
    assert found.distances.dtype == torch.float64


@pytest.mark.parametrize("batch_size", [1, 4096])
def test_ties_go_to_the_lower_index(batch_size):
    points = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [3.0, 0.0]])
    found = neighbors(points, [0], k=4, metric="l2", batch_size=batch_size)
    assert found.indices.tolist() == [[1, 2, 3, 4]]
    assert found.distances.tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_duplicates_are_exactly_zero_apart():
    points = 1000 + FEATURES[:50].double()
    points[10] = points[20]
    found = neighbors(points, [10, 20], k=1, metric="l2")
    assert found.indices.tolist() == [[20], [10]] and found.distances.tolist() == [[0.0], [0.0]]
    itself = neighbors(points[:5], points[:5], k=1, metric="l2")  # self allowed for vectors
    assert itself.indices.flatten().tolist() == [0, 1, 2, 3, 4]
    assert (itself.distances == 0).all()


@pytest.mark.parametrize("call, match", [
    (lambda: neighbors(FEATURES[:5], k=5), "k must be an integer from 1 to 4"),
    (lambda: neighbors(FEATURES[:5], FEATURES[:2], k=6), "k must be an integer from 1 to 5"),
    (lambda: neighbors(FEATURES, k=0), "k must be"),
    (lambda: neighbors(FEATURES, torch.randn(3, 15)), "queries have 15 dimensions"),
    (lambda: neighbors(torch.tensor([[0.0, 1.0], [np.nan, 1.0]]), k=1), "NaN or infinite"),
    (lambda: neighbors(FEATURES, torch.full((2, 16), np.inf)), "NaN or infinite"),
    (lambda: neighbors(FEATURES, metric="euclidean"), "unknown metric 'euclidean'"),
    (lambda: neighbors(torch.zeros(4, 3), k=1), "all-zero rows"),
    (lambda: neighbors(FEATURES, FEATURES[:3], exclude_self=True), "exclude_self=True needs"),
    (lambda: neighbors(FEATURES, torch.tensor([0.5, 1.0])), "1-D list of row indices"),
    (lambda: neighbors(FEATURES, [0, 300]), "from 0 to 299"),
    (lambda: neighbors(FEATURES[0]), "2-D"),
    (lambda: neighbors(FEATURES, batch_size=0), "batch_size"),
])
def test_bad_input_is_a_one_line_input_error(call, match):
    with pytest.raises(InputError, match=match) as error:
        call()
    assert "\n" not in str(error.value)
