"""The spine: one target (with unit targets), one input check, one scope, one capture, one blur,
one registry shape; and the review's defects that live there."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import seethrough
from seethrough.core import (
    Registry,
    Target,
    check_images,
    check_latents,
    gaussian_blur,
    layer_gradients,
    run_scope,
    unit,
)
from seethrough.errors import InputError


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- inputs --------------------------------------------------------------------------------------
def test_one_channel_and_0_255_images_are_refused_with_the_fix(resnet):
    with pytest.raises(InputError, match="1 channels, the model takes 3.*expand"):
        seethrough.attribute(resnet, images()[:, :1])
    with pytest.raises(InputError, match="divide by 255"):
        seethrough.attribute(resnet, images() * 255)
    with pytest.raises(InputError, match="look normalized"):
        seethrough.attribute(resnet, images() * 4 - 2)
    with pytest.raises(InputError, match="4 channels.*alpha"):
        check_images(torch.rand(1, 4, 8, 8), resnet)
    with pytest.raises(InputError, match="add a batch dimension"):
        check_images(torch.rand(3, 8, 8))
    assert check_images(images(), resnet).shape == (2, 3, 32, 32)


def test_latents_are_checked():
    assert check_latents(torch.randn(3, 5), 5).shape == (3, 5)
    with pytest.raises(InputError, match="6 dimensions, the generator takes 5"):
        check_latents(torch.randn(3, 6), 5)
    with pytest.raises(InputError, match="add a batch dimension"):
        check_latents(torch.randn(5))


# -- scope ---------------------------------------------------------------------------------------
def test_scope_restores_mode_grads_and_batchnorm_statistics_after_an_error(unchanged):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    with unchanged(net), pytest.raises(RuntimeError, match="boom"):
        with run_scope(net):
            assert not net[0].weight.requires_grad and net.training
            net(torch.rand(4, 3, 8, 8))  # updates the running statistics
            raise RuntimeError("boom")
    with run_scope(net, mode="eval"):
        assert not net.training
    assert net.training


# -- targets -------------------------------------------------------------------------------------
def test_unit_target_is_the_channel_mean_and_guided_backprop_finds_its_field():
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(2, 2, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)).eval()
    x = images(1, 16)
    result = seethrough.attribute(net, x, unit("0", 1, position=(4, 5)), method="guided_backprop")
    assert result.target is None
    grad = result.raw.abs().sum(1)[0]
    window = torch.zeros_like(grad, dtype=torch.bool)
    window[3:6, 4:7] = True
    assert grad[~window].sum() == 0 and grad[window].sum() > 0  # a 3x3 unit sees its window
    # the mean over space equals a callable on a trace of the layer
    with torch.enable_grad():
        leaf = x.clone().requires_grad_()
        conv = net[0](leaf)
        (expected,) = torch.autograd.grad(conv[:, 1].mean(), leaf)
    saliency = seethrough.attribute(net, x, unit("0", 1), method="saliency")
    torch.testing.assert_close(saliency.raw, expected)


def test_unit_target_reads_the_layer_before_in_place_ops(resnet):
    """The unit of ``bn1`` is scored on its own output, not on what the in-place ReLU made of it."""
    x = images(2, 32)
    goal = Target.of(unit("bn1", 3), 2)
    with goal.attached(resnet), torch.no_grad():
        out = resnet(x)
        scored = goal.scores(out)
    with torch.no_grad():
        own = resnet.bn1(resnet.conv1(x))[:, 3].mean((1, 2))
    torch.testing.assert_close(scored, own)
    with pytest.raises(InputError, match="attached"):
        Target.of(unit("bn1", 3), 2).scores(out)


def test_unit_target_errors_are_clear(resnet):
    with pytest.raises(InputError, match="out of range"):
        seethrough.attribute(resnet, images(), unit("layer1", 999))
    with pytest.raises(InputError, match="classifier row"):
        seethrough.attribute(resnet, images(), unit("layer1", 0), method="cam")


def test_evaluate_scores_the_callable_target_the_maps_explain(resnet):
    """Regression: maps made for a callable target were scored on the predicted class."""
    x = images(2, 32)
    pick = lambda out: out[:, 7]  # noqa: E731
    maps = seethrough.attribute(resnet, x, pick, method="saliency")
    scores = seethrough.evaluate(resnet, x, maps, metrics=["deletion"], step=256, progress=False)
    explicit = seethrough.evaluation.deletion(resnet, x, maps, pick, step=256, progress=False)
    torch.testing.assert_close(scores.values["deletion"], explicit)
    predicted = seethrough.evaluation.deletion(resnet, x, maps, "predicted", step=256,
                                               progress=False)
    assert not torch.allclose(scores.values["deletion"], predicted)
    assert scores.targets is None


# -- capture and blur ----------------------------------------------------------------------------
def test_layer_gradients_capture_the_output_before_an_in_place_relu():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    x = images(3, 8)
    acts, grads = layer_gradients(net, x, Target.of(1, 3), "0")
    with torch.no_grad():
        own = net[0](x)
    torch.testing.assert_close(acts, own)
    assert (acts < 0).any()
    with seethrough.Trace(net, "0", retain_grad=True) as trace:
        net(x)[:, 1].sum().backward()
    torch.testing.assert_close(trace["0"].output.detach(), own)  # Trace is in-place safe too
    torch.testing.assert_close(trace["0"].grad, grads)


def test_the_one_blur_is_torchvisions_for_rise():
    from torchvision.transforms.functional import gaussian_blur as torchvision_blur

    x = images(2, 24)
    torch.testing.assert_close(gaussian_blur(x, 5.0, radius=5), torchvision_blur(x, [11, 11], [5.0, 5.0]))
    assert gaussian_blur(x, 0) is x


# -- registries ----------------------------------------------------------------------------------
def test_registries_refuse_duplicates_and_suggest_close_names():
    from seethrough.attribution import METHODS
    from seethrough.evaluation import METRICS

    with pytest.raises(InputError, match="already registered"):
        METHODS.register("saliency", lambda *a: None)
    with pytest.raises(InputError, match="did you mean gradcam"):
        seethrough.attribute(nn.Conv2d(3, 1, 1), images(), method="gradcm")
    with pytest.raises(InputError, match="unknown metric 'delet'"):
        METRICS.get("delet")
    registry = Registry("thing", {"a": 1})
    assert registry.names() == ["a"] and "a" in registry and len(registry) == 1
    assert registry.unregister("a") == 1 and registry.names() == []
