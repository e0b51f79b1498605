"""The hand-written circle-vs-square net (issue #14): its accuracy, and seethrough's own tools
(dissection, feature visualization, circuit weights) recover the design it was written with."""
from __future__ import annotations

import pytest
import torch

from seethrough.circuits.handmade import (
    DESIGN,
    PartsProbe,
    circles_and_squares,
    curve_unit,
    edge_unit,
    handmade_net,
    side_unit,
)
from seethrough.data import ConceptWorld
from seethrough.dissection import dissect


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return handmade_net()


pytestmark = pytest.mark.usefixtures("one_thread")


def labelled(result, layer: str) -> dict[int, tuple[str, float]]:
    concepts, values = result.best(layer)
    names = result.vocabulary.names
    return {unit: (names[int(concepts[unit])], float(values[unit])) for unit in range(len(concepts))}


def test_accuracy_on_conceptworld_circles_and_squares(model):
    images, labels = circles_and_squares(1600)  # 427 circles and squares
    assert len(labels) == 427
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.9  # measured 0.916 (the goal: 0.9)


def test_dissection_labels_colour_and_shape_units(model):
    result = dissect(model, ["conv1", "fill"], ConceptWorld("val", length=200), progress=False)
    colours = labelled(result, "conv1")
    # measured: red, cyan (for green), blue, yellow, white, black
    assert [colours[unit][0] for unit in range(6)] == ["red", "cyan", "blue", "yellow", "white",
                                                      "black"]
    assert sum(colours[unit][0] == concept for unit, concept, _ in DESIGN["conv1"][:6]) >= 5
    # `fill` spreads each conv3 shape unit over the disc or box it found, where its kind wins
    # (conv3 itself answers only at an object's centre: IoU 0.01-0.04, 3 of 12 square units
    # square, no circle unit circle). Measured on `fill`: 5 of the 12 square units are labelled
    # square (IoU 0.070-0.120; the others orange, red, cyan, gravel), square is among the top
    # three concepts of 11 of them, and every one overlaps squares (0.027-0.120) more than
    # circles (0-0.022). The circle units overlap circles (0.025-0.091) and never squares (0),
    # but NONE is labelled circle: grass, red, gravel, ring, gravel. They answer ConceptWorld's
    # rings (the same round outline) as strongly as circles, so their top regions are rings and
    # objects of all colours and textures; only unit 1 has circle as its best shape concept.
    iou, names = result.iou("fill"), result.vocabulary.names
    circle, square = names.index("circle"), names.index("square")
    shapes = labelled(result, "fill")
    squares = [unit for unit, concept, _ in DESIGN["fill"] if concept == "square"]
    circles = [unit for unit, concept, _ in DESIGN["fill"] if concept == "circle"]
    assert sum(shapes[unit][0] == "square" for unit in squares) >= 5
    assert sum(square in iou[unit].topk(3).indices for unit in squares) >= 10
    assert all(iou[unit, square] > iou[unit, circle] for unit in squares)
    assert all(iou[unit, circle] > 0.02 and iou[unit, square] < 0.005 for unit in circles)


def test_dissection_labels_edge_side_curve_units(model):
    result = dissect(model, ["conv1", "conv2"], PartsProbe(96), progress=False)
    edges = labelled(result, "conv1")
    designed = [(unit, concept) for unit, concept, _ in DESIGN["conv1"] if concept.startswith("edge")]
    assert all(edges[unit][0] == concept for unit, concept in designed)  # 24 of 24, IoU 0.08-0.15
    # among the part concepts, side units are sides and the diagonal curve units curves (the
    # curves at 0, 90, 180, 270 degrees have horizontal or vertical tangents, like sides)
    iou, names = result.iou("conv2"), result.vocabulary.names
    side, corner, curve = (names.index(concept) for concept in ("side", "corner", "curve"))
    for unit, concept, _ in DESIGN["conv2"]:
        if concept == "side":
            assert iou[unit, side] > max(iou[unit, corner], iou[unit, curve])
        elif unit in {curve_unit(middle) for middle in (45, 135, 225, 315)}:
            assert iou[unit, curve] > max(iou[unit, side], iou[unit, corner])


def test_feature_visualization_draws_edges_and_colours(model):
    from seethrough.featureviz import objectives, visualize

    vertical, horizontal = edge_unit("luminance", 90, 1), edge_unit("luminance", 0, 1)
    result = visualize(model, objectives.channel("conv1", [vertical, horizontal, 0]), steps=48,
                       size=48, lr=0.1, progress=False)
    images = result.images
    grey = images.mean(1)  # (3, H, W)
    across_x, across_y = grey.mean(1).var(1), grey.mean(2).var(1)  # column and row profiles
    # the vertical-edge unit draws vertical structure: its brightness changes across x, not y
    # (26x here; 4.5-70x over seeds 0-3 and both transform presets; the gradient energy
    # d/dx against d/dy was no measure of it: 0.9-1.7x)
    assert across_x[0] > 3 * across_y[0]
    assert across_y[1] > 3 * across_x[1]  # and the horizontal one horizontal structure (12x)
    red, green = images[2, 0].mean(), images[2, 1].mean()
    assert red > green + 0.1  # the red-green unit draws red (0.57 vs 0.33)


def test_circuit_weights_show_the_wiring(model):
    from seethrough.circuits import weights

    edges = weights.circuit_weights(model, "conv1", "conv2")  # (conv2 units, conv1 units, h, w)
    excitation = edges.clamp(min=0).sum((2, 3))
    channels = ("luminance", "red-green", "blue-yellow")
    for orientation in (0, 90):  # a straight side is made of edges of its own orientation
        strongest = excitation[side_unit(orientation)].topk(6).indices.tolist()
        assert set(strongest) == {edge_unit(c, orientation, p) for c in channels for p in (1, -1)}
    for middle in (45, 135):  # a diagonal curve of diagonal edges (tangents at 135, 45 degrees)
        strongest = excitation[curve_unit(middle)].topk(6).indices.tolist()
        tangent = (middle + 90) % 180
        assert set(strongest) == {edge_unit(c, tangent, p) for c in channels for p in (1, -1)}
    parts = weights.circuit_weights(model, "conv2", "conv3").clamp(min=0).sum((2, 3))
    sides = {unit for unit, concept, _ in DESIGN["conv2"] if concept == "side"}
    for unit, concept, _ in DESIGN["conv3"]:  # squares read sides only, circles curves only
        reads = set(parts[unit].nonzero().flatten().tolist())
        assert (reads <= sides) if concept == "square" else (reads.isdisjoint(sides) and reads)
