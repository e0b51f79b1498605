"""Channels-last input: same results, a fallback for models that `.view` their activations."""
from __future__ import annotations

import torch
from torch import nn

from seethrough.attribution import attribute
from seethrough.layout import run_in_fast_layout


class ViewsItsActivations(nn.Module):
    """An old-style CNN: flattens with .view, which fails on channels-last strides."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.shape[0], -1))


def test_results_equal_the_default_layout():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(),
                          nn.LazyLinear(2)).eval()
    x = torch.rand(2, 3, 12, 12)
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(i[0].is_contiguous(
        memory_format=torch.channels_last)))
    plain = model(x)
    fast = run_in_fast_layout(model, lambda: model(x))
    torch.testing.assert_close(fast, plain)
    assert seen == [False, True]


def test_a_model_that_views_falls_back_and_is_left_unchanged(unchanged):
    torch.manual_seed(0)
    model = ViewsItsActivations().eval()
    x = torch.rand(2, 3, 8, 8)
    with unchanged(model):
        result = attribute(model, x, 1, method="saliency")
    leaf = x.clone().requires_grad_()
    model(leaf)[:, 1].sum().backward()
    torch.testing.assert_close(result.raw, leaf.grad)
    assert not model._forward_pre_hooks


def test_feature_visualization_falls_back_too(unchanged):
    from seethrough.featureviz import objectives as obj
    from seethrough.featureviz.render import Renderer

    model = ViewsItsActivations().eval()
    with unchanged(model), Renderer(model, obj.class_logit(2), size=8, transforms=None) as renderer:
        first = renderer.step()
        for _ in range(5):
            last = renderer.step()
    assert float(last) > float(first)
