"""Unit matching by activation correlation (Li et al. 2015): exact streamed correlations,
one-to-one (Hungarian) and semi-matching, shares above r and shared dissection labels."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from seethrough.circuits.matching import (
    UnitCorrelation,
    correlation,
    dissection_labels,
    match_units,
    one_to_one,
    semi_matching,
    unit_correlation,
)
from seethrough.errors import InputError
from seethrough.tallying import Batch


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.ReLU())


def permuted_copy(net: nn.Module, order: torch.Tensor) -> nn.Module:
    """``net`` with the output channels of its first conv reordered (``copy[:, i] = net[:, order[i]]``)
    and the second conv's inputs reordered to match: same function, units shuffled."""
    other = copy.deepcopy(net)
    with torch.no_grad():
        other[0].weight.copy_(net[0].weight[order])
        other[0].bias.copy_(net[0].bias[order])
        other[2].weight.copy_(net[2].weight[:, order])
    return other


def test_one_to_one_and_semi_matching_recover_a_permuted_copy_of_a_layer_exactly():
    net = tiny_net()
    order = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    other = permuted_copy(net, order)
    images = torch.rand(12, 3, 10, 10)
    found = unit_correlation(net, "1", images, other, batch_size=5, progress=False)
    assert found.shape == (8, 8)
    inverse = torch.argsort(order)  # unit u of net is unit inverse[u] of the copy
    for matching in (one_to_one(found), semi_matching(found),
                     match_units(net, other, "1", images, method="semi", progress=False)):
        assert torch.equal(matching.partner, inverse)
        assert matching.share_above(0.999) == 1.0
    assert torch.allclose(unit_correlation(net, "3", images, other, progress=False),
                          unit_correlation(net, "3", images, progress=False), atol=1e-9)


def test_streamed_correlation_equals_pearson_on_all_positions_with_merge():
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(30, 4, 3, 3, generator=generator) + 3
    b = torch.relu(a[:, :3] * 2 + torch.randn(30, 3, 3, 3, generator=generator))
    whole, shards = UnitCorrelation("a", "b"), [UnitCorrelation("a", "b") for _ in range(2)]
    for start in range(0, 30, 7):
        batch = Batch(0, torch.arange(start, min(30, start + 7)),
                      {"a": a[start:start + 7], "b": b[start:start + 7]})
        whole.update(batch)
        shards[start >= 14].update(batch)
    restored = UnitCorrelation("a", "b")
    restored.load_state_dict(shards[0].state_dict())
    rows_a = a.permute(0, 2, 3, 1).reshape(-1, 4).double()
    rows_b = b.permute(0, 2, 3, 1).reshape(-1, 3).double()
    expected = torch.corrcoef(torch.cat([rows_a, rows_b], 1).T)[:4, 4:]
    for stat in (whole, restored.merge(shards[1])):
        assert torch.allclose(stat.correlation(), expected, atol=1e-9)
    means = torch.corrcoef(torch.cat([a.mean((2, 3)), b.mean((2, 3))], 1).double().T)[:4, 4:]
    assert torch.allclose(correlation(a, b, "mean"), means, atol=1e-9)


def test_shares_unequal_layers_and_dead_units():
    values = torch.tensor([[0.9, 0.1], [0.8, 0.3], [0.2, 0.4]])
    best = one_to_one(values)  # three units of A, two of B: one is left unmatched
    assert best.partner.tolist() == [0, -1, 1]
    assert best.share_above(0.5) == pytest.approx(1 / 3)
    semi = semi_matching(values)
    assert semi.partner.tolist() == [0, 0, 1]
    assert semi.scores.tolist() == pytest.approx([0.9, 0.8, 0.4])
    assert semi.share_above(0.5) == pytest.approx(2 / 3)
    assert semi.shared_labels(["red", "disk", None], ["red", "grass"]) == 0.5
    assert math.isnan(one_to_one(values[:1]).shared_labels([None], [None, None]))  # no labels
    acts = torch.rand(10, 3, 2, 2)
    acts[:, 1] = 0  # a dead ReLU unit
    found = correlation(acts, acts)
    assert found[1].tolist() == [0.0, 0.0, 0.0] and found[0, 0] == pytest.approx(1.0)


def test_dissection_labels_keeps_detectors_only():
    dissection = SimpleNamespace(
        layers={"l": None}, iou_threshold=0.04,
        vocabulary=SimpleNamespace(names=["-", "red", "disk"]),
        best=lambda layer: (torch.tensor([1, 2, 2]), torch.tensor([0.2, 0.01, 0.05])))
    assert dissection_labels(dissection, "l") == ["red", None, "disk"]
    with pytest.raises(InputError, match="no layer"):
        dissection_labels(dissection, "m")


def test_bad_input_raises_input_error():
    with pytest.raises(InputError, match="spatial='mean'"):
        correlation(torch.rand(4, 3, 4, 4), torch.rand(4, 3, 2, 2))
    assert correlation(torch.rand(4, 3, 4, 4), torch.rand(4, 2, 2, 2), "mean").shape == (3, 2)
    with pytest.raises(InputError, match="spatial"):
        UnitCorrelation("a", "b", spatial="max")
    with pytest.raises(InputError, match="method"):
        match_units(tiny_net(), tiny_net(1), "1", torch.rand(2, 3, 6, 6), method="greedy")
    with pytest.raises(InputError, match="NaN"):
        one_to_one(torch.tensor([[float("nan")]]))
    with pytest.raises(InputError, match="one label per unit"):
        semi_matching(torch.rand(2, 2)).shared_labels(["a"], ["b", "c"])
    with pytest.raises(InputError, match="at least 2"):
        UnitCorrelation("a", "b").correlation()
