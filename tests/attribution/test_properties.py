"""Math that must hold: gradients, completeness, CAM identities, occlusion, guided rules, defaults."""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import seethrough
from seethrough.attribution import METHODS
from seethrough.attribution.gradients import quadrature
from seethrough.trace import Trace


def smooth_net(classes: int = 4) -> nn.Module:
    """A small smooth GAP + linear net (Softplus, Tanh): integrals are well behaved."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Softplus(), nn.Conv2d(8, 8, 3, stride=2), nn.Tanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    ).eval()


def relu_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def images(count=2, size=32, seed=0):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_saliency_equals_a_hand_written_gradient(resnet):
    x = images()
    leaf = x.clone().requires_grad_()
    resnet(leaf)[[0, 1], [3, 5]].sum().backward()
    result = seethrough.attribute(resnet, x, [3, 5], method="saliency")
    torch.testing.assert_close(result.raw, leaf.grad)
    torch.testing.assert_close(result.maps, leaf.grad.abs().amax(1, keepdim=True))
    inputs = seethrough.attribute(resnet, x, [3, 5], method="input_x_gradient")
    torch.testing.assert_close(inputs.maps, (x * leaf.grad).sum(1, keepdim=True))


@pytest.mark.parametrize("rule", ["gauss_legendre", "riemann_right", "trapezoid"])
def test_integrated_gradients_completeness(rule):
    model, x = smooth_net(), images(2, 16)
    steps = 50 if rule == "gauss_legendre" else 400
    result = seethrough.attribute(model, x, [1, 2], method="integrated_gradients", n_steps=steps,
                                  rule=rule, batch_size=128)
    with torch.no_grad():
        gap = model(x)[[0, 1], [1, 2]] - model(torch.zeros_like(x))[[0, 1], [1, 2]]
    sums = result.maps.sum((1, 2, 3))
    assert (gap.abs() > 1e-3).all()
    assert ((sums - gap).abs() <= 0.01 * gap.abs()).all(), (sums, gap)


def test_integrated_gradients_chunking_and_baselines():
    model, x = smooth_net(), images(3, 16)
    full = seethrough.attribute(model, x, 1, method="integrated_gradients", n_steps=8, batch_size=100)
    small = seethrough.attribute(model, x, 1, method="integrated_gradients", n_steps=8, batch_size=5)
    torch.testing.assert_close(full.maps, small.maps)
    grey = seethrough.attribute(model, x, 1, method="integrated_gradients", baseline=0.5, n_steps=8)
    per_pixel = seethrough.attribute(model, x, 1, method="integrated_gradients",
                                     baseline=torch.full((3, 16, 16), 0.5), n_steps=8)
    torch.testing.assert_close(grey.maps, per_pixel.maps)
    assert not torch.allclose(grey.maps, full.maps)


def test_quadrature_weights_integrate_polynomials():
    for rule in ("gauss_legendre", "riemann_right", "riemann_middle", "trapezoid"):
        alphas, weights = quadrature(rule, 50)
        assert abs(float(weights.sum()) - 1) < 1e-5 and alphas.min() >= 0 and alphas.max() <= 1
    alphas, weights = quadrature("gauss_legendre", 5)
    assert abs(float((weights * alphas.double() ** 9).sum()) - 0.1) < 1e-6  # exact to degree 9


def test_gradcam_at_last_conv_of_gap_linear_net_is_proportional_to_cam(resnet):
    x = images(2, 96)
    grad_cam = seethrough.attribute(resnet, x, [2, 4], method="gradcam", layer="layer4").raw
    cam = seethrough.attribute(resnet, x, [2, 4], method="cam", layer="layer4").raw
    positive = cam.clamp(min=0)
    assert positive.sum() > 0
    # alpha_k = mean dS/dA_k = w_ck / (h w), hence Grad-CAM = ReLU(CAM) / (h w)
    torch.testing.assert_close(grad_cam, positive / (3 * 3), rtol=1e-4, atol=1e-6)


def test_cam_refuses_nets_without_gap_then_linear():
    vgg_like = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    with pytest.raises(seethrough.InputError, match="global average pooling"):
        seethrough.attribute(vgg_like, images(1, 16), 0, method="cam", layer="1")


def test_occlusion_with_a_window_over_the_whole_image_is_the_output_drop(resnet):
    x = images(2, 32)
    result = seethrough.attribute(resnet, x, [1, 2], method="occlusion", window=32, baseline=0.3)
    with torch.no_grad():
        drop = resnet(x)[[0, 1], [1, 2]] - resnet(torch.full_like(x, 0.3))[[0, 1], [1, 2]]
    torch.testing.assert_close(result.maps, drop.view(2, 1, 1, 1).expand(2, 1, 32, 32))
    assert result.raw.shape == (2, 1, 1, 1)


def test_occlusion_averages_the_windows_covering_each_pixel(resnet):
    x = images(1, 32)
    result = seethrough.attribute(resnet, x, 1, method="occlusion", window=16, stride=8)
    assert result.raw.shape == (1, 1, 3, 3)
    # the top-left corner is covered by the first window only; the centre by all four middle ones
    torch.testing.assert_close(result.maps[0, 0, 0, 0], result.raw[0, 0, 0, 0])
    torch.testing.assert_close(result.maps[0, 0, 15, 15], result.raw[0, 0, :2, :2].mean())


def _relu_inputs_grads(model, method, x):
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with Trace(model, convs, retain_grad=True) as trace:
        METHODS[method](model, x, 1)
    return [trace[name].grad for name in convs]


def test_guided_backprop_passes_no_negative_gradient_through_relus():
    model, x = relu_net(), images(2, 16)
    guided = _relu_inputs_grads(model, "guided_backprop", x)
    plain = _relu_inputs_grads(model, "saliency", x)
    assert all((grad >= 0).all() for grad in guided)  # what arrives at every ReLU input
    assert any((grad < 0).any() for grad in plain)  # the ordinary rule does pass negatives


def test_guided_and_deconvnet_catch_functional_relus():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 6, 3), nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).mean((2, 3)))

    torch.manual_seed(1)
    model, x = Functional().eval(), images(2, 12)
    modular = nn.Sequential(model.conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.fc)
    for method in ("guided_backprop", "deconvnet"):
        torch.testing.assert_close(METHODS[method](model, x, 2).raw, METHODS[method](modular, x, 2).raw)
    assert not torch.allclose(METHODS["guided_backprop"](model, x, 2).raw,
                              METHODS["saliency"](model, x, 2).raw)


def test_guided_gradcam_is_guided_backprop_times_gradcam(resnet):
    x = images(2, 64)
    guided = seethrough.attribute(resnet, x, 3, method="guided_backprop").raw
    cam = seethrough.attribute(resnet, x, 3, method="gradcam").maps
    torch.testing.assert_close(seethrough.attribute(resnet, x, 3, method="guided_gradcam").raw, guided * cam)


def test_scorecam_follows_the_authors_formula():
    model, x = smooth_net(3), images(1, 16)
    result = seethrough.attribute(model, x, 2, method="scorecam", layer="3")
    acts = seethrough.capture(model, x, "3")["3"].output
    with torch.no_grad():
        black = model(torch.zeros_like(x)).softmax(1)[0, 2]
        weights = []
        for k in range(acts.shape[1]):
            up = F.interpolate(acts[:, k:k + 1], size=(16, 16), mode="bilinear", align_corners=False)
            mask = (up - up.min()) / (up.max() - up.min())
            weights.append(model(x * mask).softmax(1)[0, 2] - black)
    expected = (torch.stack(weights).view(1, -1, 1, 1) * acts).sum(1, keepdim=True).clamp(min=0)
    torch.testing.assert_close(result.raw, expected)


def test_smoothgrad_without_noise_is_its_base_and_noise_is_relative(resnet):
    x = images(2, 32)
    torch.testing.assert_close(
        seethrough.attribute(resnet, x, 1, method="smoothgrad", noise=0.0, n_samples=2).maps,
        seethrough.attribute(resnet, x, 1, method="saliency").maps,
    )
    # the same relative noise on an image and on a copy scaled by 1/2 gives the same noisy inputs
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    small = images(1, 8)
    a = seethrough.attribute(model, small, 0, method="smoothgrad", base="input_x_gradient", n_samples=4)
    b = seethrough.attribute(model, small / 2, 0, method="smoothgrad", base="input_x_gradient", n_samples=4)
    torch.testing.assert_close(a.maps / 2, b.maps)
    ig = seethrough.attribute(resnet, x, 1, method="smoothgrad", base="integrated_gradients",
                              n_samples=2, n_steps=3)
    assert ig.options["n_steps"] == 3 and ig.options["base"] == "integrated_gradients"


def test_rise_masks_are_seeded_and_have_density_p():
    model, x = smooth_net(), images(1, 32)
    a = seethrough.attribute(model, x, 1, method="rise", n_masks=40, seed=3)
    b = seethrough.attribute(model, x, 1, method="rise", n_masks=40, seed=3, batch_size=7)
    c = seethrough.attribute(model, x, 1, method="rise", n_masks=40, seed=4)
    torch.testing.assert_close(a.maps, b.maps)
    assert not torch.allclose(a.maps, c.maps)
    # with a constant score of 1 the map is sum(M) / (N p), about 1 everywhere
    constant = seethrough.attribute(model, x, lambda out: out[:, 0] * 0 + 1, method="rise",
                                    n_masks=400, batch_size=200)
    assert abs(float(constant.maps.mean()) - 1) < 0.05


def test_extremal_perturbation_reaches_its_area():
    model, x = smooth_net(), images(1, 24)
    result = seethrough.attribute(model, x, 1, method="extremal_perturbation", areas=(0.1, 0.3),
                                  iterations=200, lr=0.05)
    areas = result.raw.mean((2, 3))[0]
    assert abs(float(areas[0]) - 0.1) < 0.05 and abs(float(areas[1]) - 0.3) < 0.05, areas


def test_meaningful_perturbation_deletes_only_what_the_score_needs():
    class LeftTexture(nn.Module):
        """Class 0's logit reads only the contrast of the left half (which blur removes)."""

        def forward(self, x):
            contrast = x[..., : x.shape[-1] // 2].std((1, 2, 3))
            return torch.stack([20 * (contrast - 0.2), torch.zeros_like(contrast)], 1)

    x = images(1, 64)
    result = seethrough.attribute(LeftTexture(), x, 0, method="meaningful_perturbation", iterations=100)
    assert result.maps[..., :32].mean() > 2 * result.maps[..., 32:].mean()


def test_papers_defaults_are_pinned():
    def defaults(name):
        parameters = inspect.signature(inspect.unwrap(METHODS[name])).parameters
        return {k: p.default for k, p in parameters.items() if p.default is not p.empty}

    assert defaults("integrated_gradients")["n_steps"] == 50
    assert defaults("integrated_gradients")["baseline"] == 0.0
    assert defaults("smoothgrad")["noise"] == 0.15 and defaults("smoothgrad")["n_samples"] == 50
    rise = defaults("rise")
    assert (rise["n_masks"], rise["cells"], rise["p"]) == (8000, 7, 0.5)
    assert defaults("gradcam")["relu"] is True
    mp = defaults("meaningful_perturbation")
    assert (mp["l1"], mp["tv"], mp["tv_beta"], mp["iterations"], mp["lr"], mp["mask_size"]) == (
        1e-4, 1e-2, 3.0, 300, 0.1, 28)
    ep = defaults("extremal_perturbation")
    assert (ep["areas"], ep["iterations"], ep["lr"], ep["regularization"], ep["step"], ep["sigma"]) == (
        (0.1,), 800, 0.01, 300.0, 7, 21.0)
    assert defaults("occlusion")["baseline"] == 0.5
    assert (defaults("deeplift")["baseline"], defaults("deeplift")["maxpool"]) == (0.0, "delta")
    assert defaults("deeplift_shap")["baselines"] is None  # black + white (Captum requires some)
    gshap = defaults("gradient_shap")
    assert (gshap["n_samples"], gshap["stdevs"], gshap["baselines"]) == (5, 0.0, None)  # Captum's
    assert (defaults("layer_conductance")["n_steps"], defaults("layer_conductance")["baseline"]) == (50, 0.0)
    assert (defaults("neuron_conductance")["n_steps"], defaults("neuron_conductance")["neuron"]) == (50, None)
    assert defaults("smoothgrad")["variant"] == "smoothgrad"
    lime = defaults("lime")
    assert (lime["segments"], lime["n_samples"], lime["kernel_width"], lime["alpha"], lime["baseline"],
            lime["probabilities"]) == ("slic", 1000, 0.25, 1.0, "mean", True)
    assert defaults("kernel_shap")["n_samples"] is None  # shap's automatic 2 M + 2048
    assert defaults("shapley_sampling")["n_samples"] == 25
    assert defaults("feature_ablation")["baseline"] == 0.5
    lrp = defaults("lrp")  # zennit's EpsilonPlusFlat (Montavon et al.'s CNN recipe); gamma 0.25 as theirs
    assert (lrp["rule"], lrp["epsilon"], lrp["gamma"], lrp["box"]) == ("epsilon_plus_flat", 1e-6, 0.25, (0.0, 1.0))
    assert defaults("excitation_backprop")["layer"] is None  # default_layer, as the CAMs
    assert defaults("contrastive_excitation_backprop")["contrast_layer"] is None  # the classifier's input
    assert defaults("fullgrad")["normalize"] == "layer"  # per layer map, as the paper's code


BATCHABLE = {
    "saliency": {}, "integrated_gradients": {"n_steps": 5}, "guided_backprop": {}, "gradcam": {},
    "gradcam_plus_plus": {}, "cam": {}, "scorecam": {"top_channels": 5},
    "smoothgrad": {"n_samples": 3}, "occlusion": {"window": 16}, "rise": {"n_masks": 20},
    "meaningful_perturbation": {"iterations": 3}, "extremal_perturbation": {"iterations": 3},
}


@pytest.mark.parametrize("method", sorted(BATCHABLE))
def test_batched_equals_one_at_a_time(method, resnet):
    x = images(3, 32)
    together = seethrough.attribute(resnet, x, [1, 4, 7], method=method, **BATCHABLE[method])
    for i, label in enumerate([1, 4, 7]):
        alone = seethrough.attribute(resnet, x[i:i + 1], label, method=method, **BATCHABLE[method])
        # optimized masks: Adam normalizes tiny float differences between batch sizes
        loose = method in ("meaningful_perturbation", "extremal_perturbation")
        torch.testing.assert_close(together.maps[i:i + 1], alone.maps, rtol=1e-4,
                                   atol=1e-2 if loose else 1e-5)


def test_every_method_has_a_family_and_a_use_in_the_guide():
    from seethrough.attribution.compare import GUIDE, QUICK_METHODS, guide_frame, method_names

    assert set(GUIDE) == set(METHODS), set(GUIDE) ^ set(METHODS)
    assert all(family and len(use) > 10 for family, use in GUIDE.values())
    assert set(QUICK_METHODS) <= set(METHODS)
    assert method_names(None, quick=True) == list(QUICK_METHODS)
    frame = guide_frame(["occlusion", "saliency", "gradcam", "lime"])
    assert frame["method"].tolist() == ["saliency", "gradcam", "occlusion", "lime"]
    assert list(frame.columns) == ["family", "method", "when to use"]
