import pytest
import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.multifaceted import (
    CENTRE_PHASES,
    PCA_DIMENSIONS,
    PER_FACET,
    multifaceted,
)
from seethrough.featureviz.render import Probe


def two_faced_unit() -> nn.Module:
    """A unit that fires for red things OR for blue things (the paper's 'grocery store' neuron,
    built by hand): layer "1" holds a red and a blue detector, layer "3" sums them."""
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Conv2d(2, 1, 1), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]]).view(2, 3, 1, 1))
        net[0].bias.zero_()
        net[2].weight.fill_(1.0)
        net[2].bias.zero_()
    return net.eval()


def coloured_images(count: int, colour: list[float], generator) -> torch.Tensor:
    base = torch.tensor(colour).view(1, 3, 1, 1)
    return (base * (0.6 + 0.4 * torch.rand(count, 1, 1, 1, generator=generator))
            + 0.1 * torch.rand(count, 3, 12, 12, generator=generator)).clamp(0, 1)


def test_the_papers_numbers():
    assert PCA_DIMENSIONS == 50 and PER_FACET == 15
    assert CENTRE_PHASES[0][0] < CENTRE_PHASES[-1][0] == 1.0  # the centre first, then all of it


def test_a_two_faced_unit_gets_a_red_and_a_blue_facet(unchanged):
    generator = torch.Generator().manual_seed(0)
    images = torch.cat([coloured_images(30, [1, 0.1, 0.1], generator),
                        coloured_images(30, [0.1, 0.1, 1], generator),
                        coloured_images(30, [0.4, 0.4, 0.4], generator)])
    net = two_faced_unit()
    objective = obj.channel("3", 0)
    with unchanged(net):
        result = multifaceted(net, objective, images, facets=2, top=60, code_layer="1", steps=24)
    for members in result.members:  # each cluster is one colour: all red or all blue
        assert len({index // 30 for index in members}) == 1, members
    assert {result.members[0][0] // 30, result.members[1][0] // 30} == {0, 1}
    red_minus_blue = (result.starts[:, 0] - result.starts[:, 2]).mean((1, 2))
    assert red_minus_blue.max() > 0.5 and red_minus_blue.min() < -0.5
    final = (result.images[:, 0] - result.images[:, 2]).mean((1, 2))
    assert torch.equal(final.sign(), red_minus_blue.sign())  # each facet stays its colour
    with Probe(net, objective) as probe, torch.no_grad():
        assert (probe(result.images) > probe(result.starts)).all()


def test_seeded_and_clear_errors():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(24, 3, 10, 10, generator=generator)
    net = two_faced_unit()
    first = multifaceted(net, obj.channel("3", 0), images, facets=2, top=12, per_facet=4, steps=4)
    again = multifaceted(net, obj.channel("3", 0), images, facets=2, top=12, per_facet=4, steps=4)
    assert torch.equal(first.images, again.images) and first.members == again.members
    with pytest.raises(InputError, match="facets"):
        multifaceted(net, obj.channel("3", 0), images, facets=30)
    with pytest.raises(InputError, match="N, 3, H, W"):
        multifaceted(net, obj.channel("3", 0), images[0])
