"""The streaming quantile sketch against exact quantiles; merging shards equals one run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from seethrough.dissection import QuantileSketch
from seethrough.errors import InputError


def data(n=30_000, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    x[:, 0] = torch.relu(x[:, 0])  # point mass at 0
    x[:, 1] = torch.relu(x[:, 1] - 3.0)  # more than 99.5 % zeros: threshold exactly 0
    x[:, 2] *= 1e-4  # tiny scale
    x[:, 3] = x[:, 3].exp() * 100  # heavy tail, large scale
    x[:, 4] = 7.0  # constant
    x[:, 5] = x[:, 5] - 50  # all negative
    return x


@pytest.mark.parametrize("q", [0.005, 0.1, 0.5, 0.99])
def test_quantile_within_bound_of_exact(q):
    x = data()
    sketch = QuantileSketch(6)
    for chunk in x.split(997):
        sketch.update(chunk)
    estimate, bound = sketch.upper_quantile(q), sketch.error_bound()
    ordered = x.double().sort(0).values
    n = len(x)
    for unit in range(6):
        # any T with (about) q*n values above it is a correct answer: bracket by order stats
        k = n - q * n
        low = ordered[max(0, int(np.floor(k)) - 1), unit]
        high = ordered[min(n - 1, int(np.ceil(k))), unit]
        assert low - bound[unit] - 1e-12 <= estimate[unit] <= high + bound[unit] + 1e-12
    span = (x.max(0).values - x.min(0).values).double()
    assert (bound <= 2 * span / (sketch.bins - 1) + 2.0**-40).all()


def test_relu_point_mass_is_exact():
    x = data()
    sketch = QuantileSketch(6)
    sketch.update(x)
    assert sketch.upper_quantile(0.005)[1] == 0.0
    exact = np.percentile(x[:, 0].numpy(), 99.5)
    assert abs(sketch.upper_quantile(0.005)[0] - exact) <= 0.01 * exact


def test_constant_unit():
    sketch = QuantileSketch(6)
    sketch.update(data())
    assert sketch.upper_quantile(0.005)[4] == 7.0


@pytest.mark.parametrize("cuts", [[10_000], [1, 5000, 17_000], [29_999]])
def test_shards_merge_to_one_run(cuts):
    x = data()
    whole = QuantileSketch(6)
    whole.update(x)
    parts = [QuantileSketch(6) for _ in range(len(cuts) + 1)]
    for sketch, chunk in zip(parts, torch.tensor_split(x, cuts)):
        sketch.update(chunk)
    merged = parts[-1]
    for sketch in parts[:-1]:
        merged.merge(sketch)
    for key, value in whole.state_dict().items():
        other = merged.state_dict()[key]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other


def test_state_dict_roundtrip_and_memory_is_fixed():
    sketch = QuantileSketch(6, bins=256)
    sketch.update(data())
    copy = QuantileSketch(6, bins=256)
    copy.load_state_dict(sketch.state_dict())
    assert torch.equal(copy.upper_quantile(0.01), sketch.upper_quantile(0.01))
    copy.update(data(seed=1))
    assert copy.counts.shape == (6, 256) and copy.total == 60_000


def test_bad_input():
    sketch = QuantileSketch(3)
    with pytest.raises(InputError):
        sketch.update(torch.zeros(5, 4))
    with pytest.raises(InputError):
        sketch.upper_quantile(0.5)  # empty
    with pytest.raises(InputError):
        sketch.update(torch.full((2, 3), float("nan")))
