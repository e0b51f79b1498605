"""DeepLIFT, DeepLIFT-SHAP, GradientSHAP, conductance and the SmoothGrad variants: the math that
must hold, and agreement with Captum (the peer) on the same models and inputs."""
from __future__ import annotations

import copy
import types
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import seethrough
from seethrough.errors import InputError

captum = pytest.importorskip("captum.attr", reason="captum not installed (pip install captum)")
warnings.filterwarnings("ignore", module="captum")


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.detach().flatten().double(), b.detach().flatten().double()]))[0, 1].item()


def images(count=2, size=16, seed=0):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def relu_net() -> nn.Module:
    """ReLUs in place and not, a max pool between convolutions, global pooling, a linear head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(6, 8, 3, padding=1),
        nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(8, 5),
    ).eval()


def smooth_net() -> nn.Module:
    """The other activations Captum's DeepLift rescales: ELU, Tanh, Softplus, LeakyReLU, Sigmoid."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ELU(), nn.Conv2d(6, 6, 3, padding=1), nn.Tanh(),
        nn.Conv2d(6, 6, 3, stride=2), nn.Softplus(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(24, 8), nn.LeakyReLU(0.1), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 5),
    ).eval()


def score_change(model, x, baseline, target):
    with torch.no_grad():
        rows = torch.arange(len(x))
        return model(x)[rows, target] - model(baseline.expand_as(x))[rows, target]


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def captum_ready(resnet: nn.Module) -> nn.Module:
    """The same function in a form Captum's DeepLift handles: one ReLU module per use (Captum
    refuses a reused module, and a BasicBlock calls ``self.relu`` twice), and a linear no-op
    (identity 1x1 conv) between the stem's ReLU and max pool: when a hooked activation feeds a
    hooked MaxPool directly, Captum's module hooks do not compose its own rules (see
    ``test_captum_deeplift_differs_only_where_relu_feeds_maxpool``)."""
    model = copy.deepcopy(resnet)

    def forward(block, x):
        out = block.relu1(block.bn1(block.conv1(x)))
        out = block.bn2(block.conv2(out))
        identity = x if block.downsample is None else block.downsample(x)
        return block.relu2(out + identity)

    for block in model.modules():
        if isinstance(block, torchvision.models.resnet.BasicBlock):
            block.relu1, block.relu2 = nn.ReLU(), nn.ReLU()
            block.forward = types.MethodType(forward, block)
    identity = nn.Conv2d(64, 64, 1, bias=False)
    nn.init.dirac_(identity.weight)
    model.maxpool = nn.Sequential(identity, model.maxpool)
    return model.eval()


# -- DeepLIFT -----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [relu_net, smooth_net])
def test_deeplift_matches_captum(make):
    model, x, target = make(), images(3), torch.tensor([0, 3, 4])
    ours = seethrough.attribute(model, x, target, method="deeplift")
    theirs = captum.DeepLift(model).attribute(x.clone(), target=target)
    assert corr(ours.raw, theirs) > 0.9999
    torch.testing.assert_close(ours.raw, theirs.detach(), rtol=1e-4, atol=1e-7)


def test_deeplift_resnet18_sums_to_delta_and_matches_captum(resnet, unchanged):
    """On torchvision's resnet18 (shared in-place ReLUs, residual adds, batch norm) our map sums
    to ``f(x) - f(0)``. Captum's does not there: its max-pool rule spreads the contributions
    back with ``max_unpool2d``, which overwrites where the stem's 3x3 / stride 2 windows overlap
    (we scatter-add). With a non-overlapping stem pool both agree to rounding."""
    x, target = images(1, 64), torch.tensor([7])
    with unchanged(resnet):
        ours = seethrough.attribute(resnet, x, target, method="deeplift")
    delta = score_change(resnet, x, torch.zeros(1, 3, 64, 64), target)
    torch.testing.assert_close(ours.maps.sum((1, 2, 3)), delta, rtol=1e-3, atol=1e-5)
    model = copy.deepcopy(resnet)
    model.maxpool = nn.MaxPool2d(2)
    ours = seethrough.attribute(model, x, target, method="deeplift")
    theirs = captum.DeepLift(captum_ready(model)).attribute(x.clone(), target=target)
    assert corr(ours.raw, theirs) > 0.9999
    torch.testing.assert_close(ours.raw, theirs.detach(), rtol=1e-3, atol=1e-6)


def test_captum_deeplift_differs_only_where_relu_feeds_maxpool():
    """Captum applies its own max-pool rule differently when a ReLU module feeds the MaxPool
    module directly; with a linear identity in between it agrees with us to rounding. Both
    conserve the total, so this is about where the contributions land."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64, 3)).eval()
    identity = nn.Conv2d(4, 4, 1, bias=False)
    nn.init.dirac_(identity.weight)
    spaced = nn.Sequential(model[0], model[1], identity, *model[2:]).eval()
    x = images(2, 8)
    ours = seethrough.attribute(model, x, [0, 2], method="deeplift").raw
    direct = captum.DeepLift(model).attribute(x.clone(), target=[0, 2])
    torch.testing.assert_close(captum.DeepLift(spaced).attribute(x.clone(), target=[0, 2]).detach(),
                               ours, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(direct.sum((1, 2, 3)).detach(), ours.sum((1, 2, 3)), rtol=1e-4, atol=1e-7)


def test_deeplift_summation_to_delta_with_functional_relus_and_any_baseline():
    class Functional(nn.Module):  # F.relu / Tensor.relu_ / relu6 in forward (DenseNet style)
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
            self.head = nn.Linear(6, 4)

        def forward(self, x):
            x = F.relu(self.a(x), inplace=True)
            x = F.max_pool2d(x, 3, 2, padding=1)
            x = F.relu6(self.b(x) * 4).relu_()
            return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))

    torch.manual_seed(0)
    model, x = Functional().eval(), images(3)
    baseline = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = seethrough.attribute(model, x, [0, 1, 3], method="deeplift", baseline=baseline)
    delta = score_change(model, x, baseline, torch.tensor([0, 1, 3]))
    torch.testing.assert_close(result.maps.sum((1, 2, 3)), delta, rtol=1e-4, atol=1e-6)
    gradient = seethrough.attribute(model, x, [0, 1, 3], method="deeplift", baseline=baseline,
                                    maxpool="gradient")
    assert not torch.allclose(gradient.raw, result.raw)  # the overlapping pool's rule matters


def test_deeplift_restores_every_function_and_leaves_the_model(unchanged):
    model = relu_net()
    saved = (F.relu, torch.relu, torch.Tensor.relu_, F.max_pool2d, torch.sigmoid, F.hardtanh)
    x = images(2)
    before = model(x)
    with unchanged(model), pytest.raises(RuntimeError, match="boom"):
        def flaky(output):
            raise RuntimeError("boom")
        seethrough.attribute(model, x, flaky, method="deeplift")
    assert (F.relu, torch.relu, torch.Tensor.relu_, F.max_pool2d, torch.sigmoid, F.hardtanh) == saved
    torch.testing.assert_close(model(x), before)
    # outside a DeepLIFT batch the same call still gives plain gradients
    leaf = x.clone().requires_grad_()
    model(leaf)[:, 0].sum().backward()
    assert torch.isfinite(leaf.grad).all()


def test_deeplift_shap_matches_captum():
    model, x, target = relu_net(), images(2), torch.tensor([1, 2])
    refs = images(3, seed=5) * 0.5
    ours = seethrough.attribute(model, x, target, method="deeplift_shap", baselines=refs)
    theirs = captum.DeepLiftShap(model).attribute(x.clone(), baselines=refs, target=target)
    torch.testing.assert_close(ours.raw, theirs.detach(), rtol=1e-4, atol=1e-7)
    expected = torch.stack([score_change(model, x, r[None], target) for r in refs]).mean(0)
    torch.testing.assert_close(ours.maps.sum((1, 2, 3)), expected, rtol=1e-4, atol=1e-6)
    default = seethrough.attribute(model, x, target, method="deeplift_shap")
    black_white = torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)])
    torch.testing.assert_close(default.raw, seethrough.attribute(
        model, x, target, method="deeplift_shap", baselines=black_white).raw)


# -- GradientSHAP -------------------------------------------------------------------------------

def test_gradient_shap_converges_to_captum_and_to_integrated_gradients():
    """No common seed across libraries: with ``stdevs=0`` and one reference both are unbiased
    estimates of integrated gradients (the mean over a ~ U(0, 1) of the path gradient), so with
    many samples both approach IG and each other."""
    model, x, target = smooth_net(), images(1, 8), torch.tensor([2])
    ig = captum.IntegratedGradients(model).attribute(x, target=target, n_steps=64)
    ours = seethrough.attribute(model, x, target, method="gradient_shap", baselines=0.0,
                                n_samples=1500, batch_size=500)
    torch.manual_seed(0)
    theirs = captum.GradientShap(model).attribute(x, baselines=torch.zeros(1, 3, 8, 8), target=target,
                                                  n_samples=1500)
    assert corr(ours.raw, ig) > 0.99 and corr(theirs, ig) > 0.99
    assert corr(ours.raw, theirs) > 0.99


def test_gradient_shap_is_seeded_and_batch_independent():
    model, x = relu_net(), images(3)
    options = {"n_samples": 4, "stdevs": 0.1, "baselines": images(2, seed=3)}
    together = seethrough.attribute(model, x, [0, 1, 2], method="gradient_shap", **options)
    alone = seethrough.attribute(model, x[1:2], 1, method="gradient_shap", **options)
    torch.testing.assert_close(together.raw[1:2], alone.raw)
    other = seethrough.attribute(model, x[1:2], 1, method="gradient_shap", seed=1, **options)
    assert not torch.allclose(other.raw, alone.raw)


# -- conductance --------------------------------------------------------------------------------

def test_layer_conductance_completeness_and_captum(unchanged):
    model, x, target = relu_net(), images(3), torch.tensor([0, 1, 4])
    with unchanged(model):
        ours = seethrough.attribute(model, x, target, method="layer_conductance", layer="2", n_steps=40)
    assert ours.raw.shape == (3, 8, 16, 16) and ours.options["layer"] == "2"
    delta = score_change(model, x, torch.zeros(1, 3, 16, 16), target)
    torch.testing.assert_close(ours.raw.sum((1, 2, 3)), delta, rtol=2e-2, atol=1e-4)
    theirs = captum.LayerConductance(model, model[2]).attribute(x, target=target, n_steps=40,
                                                                method="riemann_trapezoid")
    assert corr(ours.raw, theirs) > 0.999


def test_layer_conductance_resnet18_default_layer(resnet):
    x, target = images(1, 64), torch.tensor([3])
    ours = seethrough.attribute(resnet, x, target, method="layer_conductance", n_steps=20)
    assert ours.options["layer"] == "layer4" and ours.raw.shape == (1, 512, 2, 2)
    theirs = captum.LayerConductance(resnet, resnet.layer4).attribute(
        x, target=target, n_steps=20, method="riemann_trapezoid")
    assert corr(ours.raw, theirs) > 0.99
    delta = score_change(resnet, x, torch.zeros(1, 3, 64, 64), target)
    torch.testing.assert_close(ours.raw.sum(), delta.sum(), rtol=5e-2, atol=1e-3)


def test_neuron_conductance_matches_captum_and_sums_to_the_units_conductance():
    model, x, target, neuron = relu_net(), images(2), torch.tensor([0, 3]), (2, 4, 5)
    ours = seethrough.attribute(model, x, target, method="neuron_conductance", layer="2",
                                neuron=neuron, n_steps=40, rule="trapezoid")
    theirs = captum.NeuronConductance(model, model[2]).attribute(x, neuron, target=target, n_steps=40)
    torch.testing.assert_close(ours.raw, theirs.detach(), rtol=1e-3, atol=1e-7)
    layer = seethrough.attribute(model, x, target, method="layer_conductance", layer="2", n_steps=40).raw
    torch.testing.assert_close(ours.maps.sum((1, 2, 3)), layer[:, 2, 4, 5], rtol=5e-2, atol=1e-4)


def test_neuron_conductance_of_a_channel_is_the_sum_of_its_units():
    """``(channel,)`` is the sum of the channel's units' conductances (so its pixels sum to the
    channel's layer conductance). Captum's callable selector means something else: the summed
    gradient times the gradient of the summed channel, which is not additive over units."""
    model, x = relu_net(), images(1, 4)  # layer "4" is 2 x 2 after the max pool
    options = {"method": "neuron_conductance", "layer": "4", "n_steps": 6}
    channel = seethrough.attribute(model, x, 1, neuron=(3,), **options).raw
    units = sum(seethrough.attribute(model, x, 1, neuron=(3, i, j), **options).raw
                for i in range(2) for j in range(2))
    torch.testing.assert_close(channel, units, rtol=1e-4, atol=1e-7)


def test_neuron_conductance_default_picks_the_most_conducting_channel():
    model, x = relu_net(), images(2)
    result = seethrough.attribute(model, x, [0, 3], method="neuron_conductance", layer="2", n_steps=8)
    layer = seethrough.attribute(model, x, [0, 3], method="layer_conductance", layer="2", n_steps=8)
    assert result.options["neuron"] == [(int(c),) for c in layer.raw.sum((2, 3)).argmax(1)]
    replayed = seethrough.attribute(model, x, [0, 3], method="neuron_conductance", layer="2",
                                    n_steps=8, neuron=result.options["neuron"])  # one per image
    torch.testing.assert_close(replayed.raw, result.raw)


def test_a_ranking_with_the_sanity_check_replays_an_automatic_neuron_choice():
    """The demo's ranking re-runs each method on a few images of a randomized model with the
    options it recorded; neuron conductance records one neuron per image (it failed there)."""
    from seethrough.evaluation.ranking import score_methods

    model, x = relu_net(), images(4)
    result = seethrough.attribute(model, x, [0, 1, 2, 3], method="neuron_conductance", layer="2",
                                  n_steps=4)
    frame = score_methods(model, x, {"neuron_conductance": (result, 1.0)}, sanity_images=2)
    assert frame.loc[0, "sanity_spearman"] == frame.loc[0, "sanity_spearman"]  # not NaN


# -- SmoothGrad variants ------------------------------------------------------------------------

def test_smoothgrad_variants_exact_without_noise():
    model, x = relu_net(), images(2)
    grad = seethrough.attribute(model, x, [0, 1], method="saliency").raw
    squared = seethrough.attribute(model, x, [0, 1], method="smoothgrad", noise=0.0, n_samples=2,
                                   variant="squared")
    torch.testing.assert_close(squared.raw, grad ** 2)
    torch.testing.assert_close(squared.maps, (grad ** 2).amax(1, keepdim=True))
    var = seethrough.attribute(model, x, [0, 1], method="smoothgrad", noise=0.0, n_samples=2,
                               variant="vargrad", base="input_x_gradient")
    assert var.maps.abs().max() < 1e-9 and var.raw.abs().max() < 1e-9


@pytest.mark.parametrize("variant, nt_type", [("squared", "smoothgrad_sq"), ("vargrad", "vargrad")])
def test_smoothgrad_variants_converge_to_captum_noise_tunnel(variant, nt_type):
    """Different noise draws (no common seed), so many samples: both estimate the same moments.
    Captum's ``Saliency`` is ``|grad|`` by default; VarGrad is of the signed gradient (the paper),
    so Captum runs with ``abs=False`` (the squares are the same either way)."""
    model, x = relu_net(), images(1, 8)
    ours = seethrough.attribute(model, x, 1, method="smoothgrad", variant=variant, n_samples=1000,
                                noise=0.2, batch_size=500)
    sigma = 0.2 * (x.max() - x.min()).item()
    torch.manual_seed(0)
    theirs = captum.NoiseTunnel(captum.Saliency(model)).attribute(
        x.clone(), target=1, nt_type=nt_type, nt_samples=1000, nt_samples_batch_size=500, stdevs=sigma,
        abs=False)
    assert corr(ours.raw, theirs) > 0.99


# -- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, options, message", [
    ("deeplift", {"maxpool": "avg"}, "maxpool must be"),
    ("deeplift", {"baseline": torch.zeros(5, 3, 16, 16)}, "does not broadcast"),
    ("deeplift_shap", {"baselines": torch.zeros(2, 1, 16, 16)}, "baselines must be"),
    ("gradient_shap", {"n_samples": 0}, "n_samples must be"),
    ("gradient_shap", {"stdevs": -1.0}, "stdevs must be"),
    ("layer_conductance", {"n_steps": 0, "layer": "2"}, "n_steps must be"),
    ("neuron_conductance", {"neuron": (1, 2), "layer": "2"}, r"neuron must be \(channel,\)"),
    ("neuron_conductance", {"neuron": (99,), "layer": "2", "n_steps": 2}, "out of range"),
    ("neuron_conductance", {"neuron": (0, 99, 0), "layer": "2", "n_steps": 2}, "outside the layer"),
    ("smoothgrad", {"variant": "cubed"}, "unknown variant"),
])
def test_bad_options_raise_one_clear_error(method, options, message):
    with pytest.raises(InputError, match=message) as error:
        seethrough.attribute(relu_net(), images(2), [0, 1], method=method, **options)
    assert "\n" not in str(error.value)
