"""The part of a patch a unit responds to: the gradient of the unit at its peak, cropped like
the patch."""
from __future__ import annotations

import torch
from torch import nn

from seethrough.represent import top_patches
from seethrough.represent.figures import responses_figure
from seethrough.represent.responses import gradient_picture, patch_responses


def test_a_conv_units_gradient_is_its_kernel_on_the_patch(unchanged):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3))
    images = torch.rand(5, 3, 12, 12)
    patches = top_patches(net, "0", images, k=2, size=3, progress=False)
    with unchanged(net):
        responses = patch_responses(net, patches, images, method="saliency")
    assert responses.shape == (2, 2, 3, 3, 3)
    for u in range(2):
        expected = gradient_picture(net[0].weight[u].detach())
        for rank in range(2):
            torch.testing.assert_close(responses[u, rank], expected)


def test_guided_backprop_through_inplace_relus_stays_in_the_field(unchanged):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(inplace=True), nn.Conv2d(4, 3, 3),
                        nn.ReLU(inplace=True)).eval()
    images = torch.rand(6, 3, 20, 20)
    patches = top_patches(net, "2", images, k=3, size=14, progress=False)
    with unchanged(net):
        responses = patch_responses(net, patches, images)
    assert responses.shape == (3, 3, 3, 14, 14)
    assert ((responses - 0.5).abs() > 0.01).any() and responses.min() >= 0 and responses.max() <= 1
    assert len(responses_figure(patches, responses).axes) == 3 * 6


def test_a_zero_gradient_is_grey():
    assert torch.equal(gradient_picture(torch.zeros(3, 4, 4)), torch.full((3, 4, 4), 0.5))
