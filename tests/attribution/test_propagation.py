"""LRP, excitation backprop and FullGrad: exact math, agreement with their peers, model kept."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

import seethrough
from seethrough.attribution.fullgrad import full_gradients
from seethrough.core import Target
from seethrough.errors import InputError


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1].item()


class SmallCNN(nn.Module):
    """Conv-ReLU-MaxPool-Conv-ReLU-GAP-Linear, the layers Captum's LRP supports."""

    def __init__(self, bias: bool = True, batch_norm: bool = False, inplace: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=bias)
        self.bn = nn.BatchNorm2d(8) if batch_norm else None
        self.relu1 = nn.ReLU(inplace=inplace)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=bias)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5, bias=bias)

    def forward(self, x):
        x = self.conv1(x)
        x = self.pool(self.relu1(x if self.bn is None else self.bn(x)))
        return self.fc(torch.flatten(self.gap(self.relu2(self.conv2(x))), 1))


def randomize_batch_norms(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


# -- LRP ------------------------------------------------------------------------------------
def test_lrp_epsilon_equals_the_hand_computed_rule():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = torch.rand(2, 3, 2, 2)
    eps = 0.1
    result = seethrough.attribute(net, x, [0, 2], method="lrp", rule="epsilon", epsilon=eps)

    def stab(z):
        return z + eps * torch.where(z >= 0, 1.0, -1.0)

    first, last = net[1], net[3]
    flat = x.flatten(1)
    z1 = flat @ first.weight.T + first.bias
    a1 = z1.clamp(min=0)
    z2 = a1 @ last.weight.T + last.bias
    r2 = torch.zeros_like(z2)
    r2[[0, 1], [0, 2]] = z2[[0, 1], [0, 2]]  # the relevance at the output: the target logit
    r1 = a1 * ((r2 / stab(z2)) @ last.weight)
    r0 = flat * ((r1 / stab(z1)) @ first.weight)
    torch.testing.assert_close(result.raw.flatten(1), r0, rtol=1e-5, atol=1e-6)


def test_lrp_conserves_relevance_on_a_bias_free_relu_net(images):
    torch.manual_seed(0)
    net = SmallCNN(bias=False).eval()
    logits = net(images)
    result = seethrough.attribute(net, images, [1, 3], method="lrp", rule="epsilon", epsilon=1e-9)
    torch.testing.assert_close(result.maps.sum((1, 2, 3)), logits[[0, 1], [1, 3]], rtol=1e-4, atol=1e-5)


def test_lrp_epsilon_agrees_with_captum(images):
    from captum.attr import LRP

    torch.manual_seed(0)
    net = SmallCNN().eval()
    ours = seethrough.attribute(net, images, [1, 3], method="lrp", rule="epsilon", epsilon=1e-6)
    theirs = LRP(copy.deepcopy(net)).attribute(images.clone(), target=torch.tensor([1, 3]))
    # same rules (LRP-eps on conv / linear, gradient through max pool, eps-rule / Norm on the
    # average pool): equal up to the stabilisers
    assert corr(ours.raw, theirs) > 0.9999
    torch.testing.assert_close(ours.raw, theirs, rtol=1e-3, atol=1e-5)


def test_lrp_merges_batch_norm_and_keeps_the_model(images, unchanged):
    torch.manual_seed(0)
    net = randomize_batch_norms(SmallCNN(bias=False, batch_norm=True, inplace=True))
    with unchanged(net):
        merged = seethrough.attribute(net, images, [1, 3], method="lrp", rule="epsilon", epsilon=1e-9)
    # merged into conv1, the BatchNorm's shift becomes a bias: relevance is no longer exactly
    # conserved, but the map equals LRP on the hand-merged net
    folded = SmallCNN(bias=True).eval()
    folded.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("bn")}, strict=False)
    with torch.no_grad():
        scale = net.bn.weight / torch.sqrt(net.bn.running_var + net.bn.eps)
        folded.conv1.weight.copy_(net.conv1.weight * scale[:, None, None, None])
        folded.conv1.bias.copy_(net.bn.bias - net.bn.running_mean * scale)
        folded.conv2.bias.zero_()
        folded.fc.bias.zero_()
    expected = seethrough.attribute(folded, images, [1, 3], method="lrp", rule="epsilon", epsilon=1e-9)
    torch.testing.assert_close(merged.raw, expected.raw, rtol=1e-4, atol=1e-6)


def test_lrp_composites_run_on_a_resnet_and_leave_it_unchanged(unchanged):
    model = randomize_batch_norms(ResNet(BasicBlock, [1, 1, 1, 1], num_classes=4))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with unchanged(model):
        for rule in ("epsilon_plus_flat", "epsilon_gamma_box", "gamma", "alpha_beta"):
            result = seethrough.attribute(model, x, 2, method="lrp", rule=rule)
            assert torch.isfinite(result.maps).all() and result.maps.abs().sum() > 0, rule
            assert result.options["rule"] == rule


# -- excitation backprop ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vgg():
    """A small VGG with BatchNorm (torchvision's layer layout: features.N, classifier.N)."""
    from collections import OrderedDict

    from torchvision.models.vgg import make_layers

    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Linear(32 * 4, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64),
                               nn.ReLU(True), nn.Dropout(), nn.Linear(64, 6))
    net = nn.Sequential(OrderedDict(
        features=make_layers([8, "M", 16, "M", 32, 32, "M"], batch_norm=True),
        avgpool=nn.AdaptiveAvgPool2d(2), flatten=nn.Flatten(), classifier=classifier))
    return randomize_batch_norms(net)


@pytest.fixture(scope="module")
def photos():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def test_excitation_backprop_agrees_with_torchray(vgg, photos):
    from torchray.attribution.excitation_backprop import excitation_backprop as torchray_ebp

    ours = seethrough.attribute(vgg, photos, [1, 4], method="excitation_backprop", layer="features.10")
    theirs = torch.cat([torchray_ebp(copy.deepcopy(vgg), photos[i:i + 1], t, saliency_layer="features.10")
                        for i, t in enumerate([1, 4])])
    assert ours.raw.shape == theirs.shape
    for i in range(2):
        assert corr(ours.raw[i], theirs[i]) > 0.99
    torch.testing.assert_close(ours.raw, theirs, rtol=1e-3, atol=1e-6)


def test_contrastive_excitation_backprop_agrees_with_torchray(vgg, photos):
    from torchray.attribution.excitation_backprop import (
        contrastive_excitation_backprop as torchray_cebp,
    )

    ours = seethrough.attribute(vgg, photos, [1, 4], method="contrastive_excitation_backprop",
                                layer="features.10")
    theirs = torch.cat([torchray_cebp(copy.deepcopy(vgg), photos[i:i + 1], t, saliency_layer="features.10",
                                      contrast_layer="classifier.5", classifier_layer="classifier.6")
                        for i, t in enumerate([1, 4])])
    for i in range(2):
        assert corr(ours.raw[i], theirs[i]) > 0.99
    torch.testing.assert_close(ours.raw, theirs, rtol=1e-3, atol=1e-6)


def test_excitation_backprop_on_a_resnet_agrees_with_torchray(photos):
    from torchray.attribution.excitation_backprop import excitation_backprop as torchray_ebp
    from torchray.attribution.excitation_backprop import update_resnet

    torch.manual_seed(0)
    model = randomize_batch_norms(ResNet(BasicBlock, [1, 1, 1, 1], num_classes=6))
    ours = seethrough.attribute(model, photos[:1], 3, method="excitation_backprop", layer="layer2")
    theirs = torchray_ebp(update_resnet(copy.deepcopy(model)), photos[:1], 3, saliency_layer="layer2")
    assert corr(ours.raw, theirs) > 0.99


def test_excitation_backprop_is_a_probability(vgg, photos):
    """Marginal winning probabilities: non-negative, and summing to 1 over a layer (VGG: ReLU
    activations, no residual sums)."""
    result = seethrough.attribute(vgg, photos, [1, 4], method="excitation_backprop", layer="features.10")
    assert (result.raw >= 0).all()
    torch.testing.assert_close(result.raw.sum((1, 2, 3)), torch.ones(2), rtol=1e-3, atol=1e-4)


# -- FullGrad ---------------------------------------------------------------------------------------
def test_fullgrad_completeness_on_a_relu_net(images):
    torch.manual_seed(0)
    net = randomize_batch_norms(SmallCNN(bias=True, batch_norm=True, inplace=True))
    target = Target.of([1, 3], 2)
    inputs, layers, other = full_gradients(net, images, target)
    total = inputs.sum((1, 2, 3)) + sum(t.sum((1, 2, 3)) for t in layers) + other
    torch.testing.assert_close(total, net(images)[[0, 1], [1, 3]], rtol=1e-4, atol=1e-5)
    assert len(layers) == 3  # conv1, bn, conv2


def test_fullgrad_agrees_with_pytorch_grad_cam(unchanged):
    from pytorch_grad_cam import FullGrad
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = randomize_batch_norms(torchvision.models.resnet18(num_classes=6))
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with unchanged(model):
        ours = seethrough.attribute(model, x, 4, method="fullgrad", normalize="channel")
        paper = seethrough.attribute(model, x, 4, method="fullgrad")
    cam = FullGrad(model=copy.deepcopy(model), target_layers=[])
    theirs = torch.as_tensor(cam(input_tensor=x, targets=[ClassifierOutputTarget(4)]))
    assert corr(ours.maps, theirs) > 0.99
    assert corr(paper.maps, theirs) > 0.9  # per-layer normalisation (the paper's code) differs a bit


# -- options, errors, the model kept ---------------------------------------------------------------
@pytest.mark.parametrize(("method", "options", "match"), [
    ("lrp", {"rule": "zplus"}, "unknown LRP rule"),
    ("lrp", {"epsilon": -1.0}, "epsilon must be"),
    ("lrp", {"gamma": "big"}, "gamma must be"),
    ("lrp", {"box": (1.0, 0.0)}, "box must be"),
    ("fullgrad", {"normalize": "image"}, "normalize must be"),
    ("excitation_backprop", {"layer": "nope"}, "nope"),
])
def test_bad_options_raise_one_clear_error(method, options, match, images):
    net = SmallCNN().eval()
    with pytest.raises(InputError, match=match) as info:
        seethrough.attribute(net, images, 0, method=method, **options)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("method", ["lrp", "excitation_backprop", "contrastive_excitation_backprop",
                                    "fullgrad"])
def test_model_unchanged_when_the_target_raises_midway(method, images, unchanged):
    import torch.nn.functional as F

    net = SmallCNN(batch_norm=True, inplace=True).train()  # BatchNorm statistics would move
    functions = {name: getattr(F, name) for name in ("conv2d", "linear", "batch_norm", "adaptive_avg_pool2d")}
    calls = []

    def flaky(output):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return output[:, 0]

    with unchanged(net), pytest.raises(RuntimeError, match="boom"):
        seethrough.attribute(net, images, flaky, method=method, batch_size=1)
    assert all(getattr(F, name) is f for name, f in functions.items())
    assert net.training
