"""Net2Vec and TCAV on models built so that the answer is known."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from seethrough.concepts import net2vec, tcav
from seethrough.data import ConceptWorld
from tests.dissection.test_run import WORLD, Frozen

TRAIN = Frozen(ConceptWorld("train", length=48, size=64))
TCAV_WORLD = Frozen(ConceptWorld("test", length=80, size=64))


class Pixels(nn.Module):
    """Activations = the RGB pixels themselves (three units at full resolution)."""

    def __init__(self):
        super().__init__()
        self.units = nn.Identity()

    def forward(self, x):
        return self.units(x)


def test_net2vec_combines_channels_better_than_one(unchanged):
    """'white' is high R, G and B together: a sum of channels beats any single channel."""
    model = Pixels()
    with unchanged(model):
        result = net2vec(model, "units", TRAIN, WORLD, concepts=["white", "blue", "yellow"],
                         epochs=12, lr=0.2)
    frame = result.to_frame().set_index("concept")
    assert result.weights.shape == (3, 3)
    assert frame.loc["white", "net2vec"] > frame.loc["white", "single_unit"] + 0.05
    assert frame.net2vec.min() > 0.05
    white = result.weights[result.concepts.index("white")]
    assert (white > 0).all()  # every channel pushes towards white


def test_net2vec_classification():
    result = net2vec(Pixels(), "units", TRAIN, WORLD, mode="classification",
                     concepts=["sky", "meadow"], epochs=12, lr=0.2)
    frame = result.to_frame()
    assert set(frame.category) == {"scene"}
    assert (frame.net2vec >= 0).all() and (frame.net2vec <= 1).all()
    assert frame.net2vec.max() > 0.6  # colour statistics tell a sky or a meadow from others


class RedCounter(nn.Module):
    """Class 0's logit is the mean of the red channel, class 1's its negative."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 3, 1), nn.AvgPool2d(8))
        with torch.no_grad():
            self.features[0].weight.copy_(torch.eye(3)[:, :, None, None])
            self.features[0].bias.zero_()
        self.head = nn.Linear(3, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]]))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tcav_finds_the_direction_the_class_uses(unchanged):
    model = RedCounter()
    with unchanged(model):
        result = tcav(model, "features", TCAV_WORLD, concepts=["red"], classes=[0, 1], runs=20,
                      examples=12, class_examples=20, min_cover=0.01)
    frame = result.to_frame().set_index("class")
    assert frame.loc[0, "tcav"] > 0.9 and frame.loc[1, "tcav"] < 0.1
    assert frame.loc[0, "significant"] and frame.loc[1, "significant"]
    assert model.features[0].weight.grad is None  # the user's gradients are untouched
