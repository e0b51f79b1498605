"""Polysemantic units: a unit planted by hand as the sum of a red detector and a circle detector
is found, and both its concepts are named."""
import pytest
import torch
from torch import nn

import seethrough
from seethrough.errors import InputError
from seethrough.represent.polysemantic import effective_concepts, polysemantic_units

LAYER = "features.block5"


class RedDetector(nn.Module):
    """A red detector written by hand: closeness of each pixel to ConceptWorld's red, averaged
    over each cell of ``grid`` x ``grid``."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid
        self.register_buffer("red", torch.tensor(seethrough.ConceptWorld.colour_rgb["red"]))

    def forward(self, images):
        distance = (images - self.red[None, :, None, None]).square().sum(1, keepdim=True)
        return nn.functional.adaptive_avg_pool2d(torch.exp(-distance / 0.02), self.grid)


class PlantedNet(nn.Module):
    """ConceptNet's features up to ``LAYER`` with unit ``into`` replaced by the sum of the hand
    red detector and unit ``circle`` (each divided by its top-quantile threshold)."""

    def __init__(self, net, into: int, circle: int, red_scale: float, circle_scale: float):
        super().__init__()
        self.net, self.red = net, RedDetector(8)
        self.into, self.circle = into, circle
        self.red_scale, self.circle_scale = red_scale, circle_scale
        self.planted = nn.Identity()

    def forward(self, images):
        features = self.net.features(self.net.normalize(images)).clone()
        features[:, self.into] = (self.red(images)[:, 0] / self.red_scale
                                  + features[:, self.circle] / self.circle_scale)
        return self.planted(features)


def _concepts(frame, unit):
    text = frame.set_index("unit").concepts[unit]
    return set(text.split(", ")) if text else set()


@pytest.mark.slow
def test_a_planted_red_or_circle_unit_is_found_with_both_concepts():
    world = seethrough.ConceptWorld("val", length=300)
    net = seethrough.load_model("conceptnet")
    clean = seethrough.dissect(net, [LAYER], world, progress=False)
    names = clean.vocabulary.names
    categories = [clean.vocabulary.category_name(i) for i in range(len(names))]
    iou = clean.iou(LAYER)
    red = names.index("red")
    circle = int(iou[:, names.index("circle")].argmax())  # the best circle detector
    images = world.batch()["image"]
    red_maps = RedDetector(8)(images)
    hand = seethrough.dissect(nn.Sequential(RedDetector(8)), ["0"], world, progress=False)
    assert hand.to_frame().concept[0] == "red"  # the hand-made unit is a red detector
    frame = polysemantic_units(iou, names, categories=categories)
    assert "red" not in _concepts(frame, circle)
    into = int(frame.unit.iloc[-1])  # a unit with the fewest concepts, replaced
    planted = PlantedNet(net, into, circle, float(red_maps.quantile(0.995)),
                         float(clean.layers[LAYER].thresholds[circle]))
    dissection = seethrough.dissect(planted, ["planted"], world, progress=False)
    found = polysemantic_units(dissection.iou("planted"), names, categories=categories)
    row = found.set_index("unit").loc[into]
    assert row.polysemantic and {"red", "circle"} <= _concepts(found, into)
    assert row.categories >= 2 and row.score > 1.2
    assert found.unit.tolist().index(into) < len(found) // 2  # among the more polysemantic
    assert iou[:, red].max() < dissection.iou("planted")[into, red]


def test_scores_and_table():
    assert effective_concepts(torch.tensor([0.1, 0.1])) == pytest.approx(2.0)
    assert effective_concepts(torch.tensor([0.2])) == pytest.approx(1.0)
    assert effective_concepts(torch.tensor([])) == 0.0
    iou = torch.tensor([[0.05, 0.05, 0.0], [0.3, 0.0, 0.0]])
    frame = polysemantic_units(iou, ["red", "circle", "none"], categories=["c", "s", "none"])
    assert frame.unit.tolist() == [0, 1] and frame.categories.tolist() == [2, 1]
    with pytest.raises(InputError, match="one column per name"):
        polysemantic_units(iou, ["red"])
