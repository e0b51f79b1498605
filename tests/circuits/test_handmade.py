"""The hand-written circle-vs-square net (issue #14): its accuracy, and seethrough's own tools
(dissection, feature visualization, circuit weights) recover the design it was written with."""
from __future__ import annotations

import pytest
import torch

from seethrough.circuits.handmade import (
    DESIGN,
    PartsProbe,
    circles_and_squares,
    corner_unit,
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
    assert accuracy >= 0.9  # measured 0.930 (the goal: 0.9; ConceptWorld test: 0.907)


def test_dissection_labels_colour_and_shape_units(model):
    result = dissect(model, ["conv1", "fill"], ConceptWorld("val", length=200), progress=False)
    colours = labelled(result, "conv1")
    # measured: red, cyan (for green), blue, yellow, white, black
    assert [colours[unit][0] for unit in range(6)] == ["red", "cyan", "blue", "yellow", "white",
                                                      "black"]
    assert sum(colours[unit][0] == concept for unit, concept, _ in DESIGN["conv1"][:6]) >= 5
    # `fill` spreads each conv3 shape unit over the disc or box it found, where its kind wins
    # (conv3 itself answers only at an object's centre, a small blob). Measured on `fill`: all 5
    # circle units are labelled circle (IoU 0.053-0.151) and 8 of the 12 square units square
    # (IoU 0.098-0.143; the others stripes_vertical three times and cyan, with square second or
    # third, 0.061-0.105). Hole units keep rings out of the circle units (ring IoU 0-0.019; 0.03-
    # 0.085 without them, when no circle unit was labelled circle), and weighing colour edges
    # 0.3 against luminance ones keeps their top regions from being objects of one colour.
    iou, names = result.iou("fill"), result.vocabulary.names
    circle, square, ring = (names.index(concept) for concept in ("circle", "square", "ring"))
    shapes = labelled(result, "fill")
    squares = [unit for unit, concept, _ in DESIGN["fill"] if concept == "square"]
    circles = [unit for unit, concept, _ in DESIGN["fill"] if concept == "circle"]
    assert sum(shapes[unit][0] == "circle" for unit in circles) >= 4  # a majority of 5: 5
    assert sum(shapes[unit][0] == "square" for unit in squares) >= 7  # a majority of 12: 8
    assert all(square in iou[unit].topk(3).indices for unit in squares)
    assert all(iou[unit, square] > iou[unit, circle] for unit in squares)
    assert all(iou[unit, circle] > max(0.04, iou[unit, square], 2 * iou[unit, ring])
               for unit in circles)


def test_dissection_labels_edge_side_curve_corner_units(model):
    result = dissect(model, ["conv1", "conv2"], PartsProbe(96), progress=False)
    edges = labelled(result, "conv1")
    designed = [(unit, concept) for unit, concept, _ in DESIGN["conv1"] if concept.startswith("edge")]
    assert all(edges[unit][0] == concept for unit, concept in designed)  # 24 of 24, IoU 0.08-0.15
    # among the part concepts, side units are sides, corner units corners and the diagonal curve
    # units curves (the curves at 0, 90, 180, 270 degrees have horizontal or vertical tangents,
    # like sides)
    iou, names = result.iou("conv2"), result.vocabulary.names
    side, corner, curve = (names.index(concept) for concept in ("side", "corner", "curve"))
    for unit, concept, _ in DESIGN["conv2"]:
        if concept == "side":
            assert iou[unit, side] > max(iou[unit, corner], iou[unit, curve])
        elif concept == "corner":
            assert iou[unit, corner] > 2 * max(iou[unit, side], iou[unit, curve])
        elif unit in {curve_unit(middle) for middle in (45, 135, 225, 315)}:
            assert iou[unit, curve] > max(iou[unit, side], iou[unit, corner])
    # and Network Dissection labels every corner unit corner, of all concepts (edges included):
    # measured 12 of 12, IoU 0.055-0.070 (the runner-up an edge, 0.024-0.056)
    parts = labelled(result, "conv2")
    corners = [unit for unit, concept, _ in DESIGN["conv2"] if concept == "corner"]
    assert sum(parts[unit][0] == "corner" for unit in corners) >= 10


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
    for at in (45, 225):  # a corner of the two edges of its sides (0 and 90 degrees)
        strongest = excitation[corner_unit(at, 0)].topk(12).indices.tolist()
        assert set(strongest) == {edge_unit(c, o, p) for c in channels for o in (0, 90)
                                  for p in (1, -1)}
    wiring = weights.circuit_weights(model, "conv2", "conv3").sum((2, 3))
    kinds = {concept: {unit for unit, c, _ in DESIGN["conv2"] if c == concept}
             for concept in ("side", "curve", "corner", "hole")}
    for unit, concept, _ in DESIGN["conv3"]:
        # squares read sides and corners, circles curves; both are inhibited by hole units only
        reads = set(wiring[unit].clamp(min=0).nonzero().flatten().tolist())
        inhibited = set((-wiring[unit]).clamp(min=0).nonzero().flatten().tolist())
        if concept == "square":
            assert reads == {u for u in kinds["side"] | kinds["corner"] if wiring[unit, u] > 0}
            assert reads & kinds["side"] and reads & kinds["corner"]
        else:
            assert reads and reads <= kinds["curve"]
        assert inhibited and inhibited <= kinds["hole"]
