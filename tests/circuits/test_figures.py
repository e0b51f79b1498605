"""The circuit figure of one unit: its strongest inputs ranked by summed weights, drawn as a graph."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from seethrough.circuits.figures import circuit_figure, strongest_inputs
from seethrough.circuits.weights import circuit_weights
from seethrough.errors import InputError


def _image_axes(figure) -> int:
    return sum(1 for axis in figure.axes if axis.images)


@pytest.fixture
def tiny() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, padding=1))
    net.input_size = (3, 16, 16)
    return net.eval()


def test_strongest_inputs_orders_each_side_by_total():
    weights = torch.zeros(2, 6, 2, 2)
    totals = torch.tensor([0.5, -2.0, 3.0, 0.0, -0.25, 1.0])
    weights[1, :, 0, 0] = totals * 2
    weights[1, :, 1, 1] = -totals  # the map's sum is what ranks, not any one weight
    positive, negative, found = strongest_inputs(weights, 1, count=2)
    assert positive == [2, 5]
    assert negative == [1, 4]
    torch.testing.assert_close(found, totals)
    assert strongest_inputs(weights, 1, count=5)[:2] == ([2, 5, 0], [1, 4])
    assert strongest_inputs(weights, 0, count=3)[:2] == ([], [])
    with pytest.raises(InputError):
        strongest_inputs(weights, 2)


def test_circuit_figure_shows_unit_inputs_and_maps(tiny, unchanged):
    with unchanged(tiny):
        figure = circuit_figure(tiny, "4", 3, count=2, steps=2)
    # the unit, and a feature visualization and a weight map for each of 2 + 2 inputs
    assert _image_axes(figure) == 1 + 2 * 4
    titles = [axis.get_title() for axis in figure.axes]
    assert "4 unit 3" in titles
    assert sum(title.startswith("3 unit ") for title in titles) == 4  # inputs: the pool's output
    maps = [axis.images[0] for axis in figure.axes if axis.images and axis.get_title()[:3] == "sum"]
    assert len(maps) == 4 and len({image.get_clim() for image in maps}) == 1
    low, high = maps[0].get_clim()
    assert low == -high > -float("inf")


def test_circuit_figure_reuses_visualizations_and_expands(tiny, unchanged, monkeypatch):
    given = {("3", i): torch.rand(3, 8, 8) for i in range(6)} | {("6", 1): torch.rand(3, 8, 8)}
    monkeypatch.setattr("seethrough.featureviz.render.visualize", _no_rendering)
    with unchanged(tiny):
        figure = circuit_figure(tiny, "6", 1, inputs_layer="3", count=1, visualizations=given)
    positive, negative, _ = strongest_inputs(circuit_weights(tiny, "3", "6"), 1, count=1)
    assert _image_axes(figure) == 1 + 2 * len(positive + negative) > 1
    assert "expanded weights" in figure.get_suptitle()
    assert {axis.images[0].get_array().shape for axis in figure.axes
            if axis.get_title().startswith("sum")} == {(5, 5)}  # two 3x3 convs: a 5x5 field


def test_circuit_figure_refuses_the_first_convolution(tiny):
    with pytest.raises(InputError, match="model's input"):
        circuit_figure(tiny, "0", 0, steps=1)


def _no_rendering(*args, **kwargs):
    raise AssertionError("every visualization was given: nothing should be rendered")
