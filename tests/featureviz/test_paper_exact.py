"""Each paper's constants pinned: a changed constant fails here (see each module's docstring)."""
import inspect

import numpy as np
import pytest
import scipy.ndimage
import torch

from seethrough.featureviz import objectives as obj
from seethrough.featureviz.objectives import Evaluation
from seethrough.featureviz.regularizers import (
    IMAGENET_MEAN,
    YOSINSKI,
    ClipSmallContribution,
    ClipSmallNorm,
    GaussianBlur,
    L2Decay,
    yosinski,
)
from seethrough.featureviz.render import Probe, RawPixelParam, Renderer, visualize
from seethrough.featureviz.synthesis import (
    deepdream,
    inversion,
    invert,
    style,
    synthesize_texture,
    texture,
    transfer_style,
)
from seethrough.featureviz.synthesis.texture import LBFGS_OPTIONS, target_grams
from seethrough.trace import capture
from tests.featureviz.conftest import smooth_image


def gatys_e(activation, goal_gram):
    """E_l = 1/(4 N^2 M^2) sum (F F^T - A)^2, written out."""
    f = activation[0].flatten(1).double()
    n, m = f.shape
    return float(((f @ f.T - goal_gram[0].double()) ** 2).sum() / (4 * n ** 2 * m ** 2))


# -- Gatys et al. 2015 / 2016 ---------------------------------------------------------------

def test_gatys_gram_style_and_content_losses_are_the_papers():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 4, 5, 6, generator=g), torch.rand(1, 4, 5, 6, generator=g)
    gram_b = obj.gram(b, normalize=False)
    assert torch.allclose(gram_b[0], b[0].flatten(1) @ b[0].flatten(1).T)  # unnormalized F F^T
    e = Evaluation({"l": a}, None, torch.zeros(1, 3, 10, 12))
    assert -float(obj.gatys_style_loss("l", gram_b)(e)) == pytest.approx(gatys_e(a, gram_b), rel=1e-5)
    half_sum = 0.5 * float(((a - b) ** 2).sum())
    assert -float(obj.gatys_content_loss("l", b)(e)) == pytest.approx(half_sum, rel=1e-5)


def test_texture_paper_preset_constants(resnet):
    paper = texture.PRESETS["paper"]
    assert (paper["loss"], paper["param"], paper["optimizer"], paper["lr"]) == (
        "gatys", "raw", torch.optim.LBFGS, 1.0)
    assert LBFGS_OPTIONS == {"max_iter": 1, "history_size": 100, "line_search_fn": "strong_wolfe",
                             "tolerance_grad": 0.0, "tolerance_change": 0.0}
    assert inspect.signature(synthesize_texture).parameters["preset"].default == "paper"
    # equal weights 1/L over the layers
    image, tex, layers = torch.rand(1, 3, 32, 32), smooth_image(1), ["conv1", "layer1", "layer2"]
    objective = texture.texture_objective(resnet, tex, layers, loss="gatys")
    goal, got = target_grams(resnet, tex, layers, normalize=False), capture(resnet, image, layers)
    want = sum(gatys_e(got[l].output, goal[l]) for l in layers) / len(layers)
    with Probe(resnet, objective) as probe:
        assert -float(probe(image)) == pytest.approx(want, rel=1e-4)


def test_texture_paper_preset_starts_from_noise_and_matches_the_grams(resnet, unchanged):
    tex, layers = smooth_image(1), ["conv1", "layer1"]
    with unchanged(resnet):
        result = synthesize_texture(resnet, tex, layers=layers, steps=40)
    got, want = target_grams(resnet, result.images, layers), target_grams(resnet, tex, layers)
    for layer in layers:
        assert (got[layer] - want[layer]).norm() / want[layer].norm() < 0.15, layer
    start = RawPixelParam((1, 3, 32, 32), seed=0)().detach()  # white noise, uniform in [0, 1]
    assert 0.45 < float(start.mean()) < 0.55 and float(start.std()) > 0.25
    assert len(result.history) == 40 and result.settings["evaluations"] >= 40
    assert result.history[-1][0] > 100 * result.history[0][0]  # losses are negative: 100x smaller


def test_style_paper_preset_constants(resnet):
    paper = style.PRESETS["paper"]
    assert paper["content_weight"] / paper["style_weight"] == 1e-3  # alpha / beta, Fig. 3 B-D
    assert (paper["init"], paper["param"], paper["optimizer"], paper["loss"]) == (
        "noise", "raw", torch.optim.LBFGS, "gatys")
    assert inspect.signature(transfer_style).parameters["preset"].default == "paper"
    content, painting = smooth_image(2), smooth_image(3)
    layers = ["conv1", "layer1", "layer2", "layer3", "layer4"]
    objective = style.style_objective(resnet, content, painting, "layer2", layers,
                                      content_weight=1.0, style_weight=1e3)
    image = torch.rand(1, 3, 32, 32)
    grams = target_grams(resnet, painting, layers, normalize=False)
    got = capture(resnet, image, layers)
    p = capture(resnet, content, "layer2")["layer2"].output
    content_loss = 0.5 * float(((got["layer2"].output - p) ** 2).sum())
    style_loss = sum(gatys_e(got[l].output, grams[l]) / 5 for l in layers)  # w_l = 1/5
    with Probe(resnet, objective) as probe:
        assert -float(probe(image)) == pytest.approx(content_loss + 1e3 * style_loss, rel=1e-4)


def test_style_paper_preset_lowers_the_style_loss(resnet, unchanged):
    content, painting = smooth_image(2), torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with unchanged(resnet):
        result = transfer_style(resnet, content, painting, content_layer="layer2",
                                style_layers=["conv1", "layer1"], steps=15)
    assert result.settings["preset"] == "paper"
    assert result.history[-1][0] > 10 * result.history[0][0]  # the loss 10x smaller
    assert (result.images - content).abs().mean() > 0.02


# -- Mahendran & Vedaldi 2015 ---------------------------------------------------------------

def test_inversion_constants():
    assert (inversion.MV_ALPHA, inversion.MV_BETA) == (6.0, 2.0)
    assert inversion.MV_BOUND == 80 / 255 and inversion.MV_VARIATION == inversion.MV_BOUND / 6.5
    # the authors' code's lambdaTV / 2 = 0.5, 5, 50 and lambdaL2 / 2 = 4e-10, normalized as the paper
    assert inversion.MV_LAMBDA_V == pytest.approx((0.5 / 42.25, 5 / 42.25, 50 / 42.25))
    assert inversion.MV_LAMBDA_ALPHA == pytest.approx(4e-10 * 80 ** 4)
    lambdas = [inversion.paper_tv_weight(d) * 42.25 for d in (0.0, 0.3, 0.5, 0.7, 1.0)]
    assert lambdas == pytest.approx([0.5, 0.5, 5.0, 50.0, 50.0])
    assert (inversion.MV_MOMENTUM, inversion.MV_LR, inversion.MV_STEPS) == (0.9, 0.004, 400)
    assert inversion._schedule(8) == [1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01]
    assert inspect.signature(invert).parameters["preset"].default == "paper"


def test_inversion_regularizers_are_normalized_as_in_the_paper(resnet):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 10, 12, generator=g)
    e = Evaluation({}, None, x)
    b, v = inversion.MV_BOUND, inversion.MV_VARIATION
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    r_alpha = float((x - mean).abs().pow(6).sum() / (10 * 12 * b ** 6))
    dx, dy = x[..., :-1, 1:] - x[..., :-1, :-1], x[..., 1:, :-1] - x[..., :-1, :-1]
    r_v = float((dx ** 2 + dy ** 2).sum() / (10 * 12 * v ** 2))
    assert float(obj.mv_alpha_norm(6, bound=b, center=IMAGENET_MEAN)(e)) == pytest.approx(r_alpha, rel=1e-5)
    assert float(obj.mv_total_variation(2, variation=v)(e)) == pytest.approx(r_v, rel=1e-5)
    target, image = smooth_image(5), torch.rand(1, 3, 32, 32, generator=g)
    objective = inversion.inversion_objective(resnet, target, "layer1", tv_weight=5.0, alpha_weight=0.7,
                                              bound=b, paper=True)
    phi, phi0 = capture(resnet, image, "layer1")["layer1"].output, capture(resnet, target, "layer1")["layer1"].output
    e = Evaluation({}, None, image)
    want = (float(((phi - phi0) ** 2).sum() / (phi0 ** 2).sum())
            + 5.0 * float(obj.mv_total_variation(2, variation=v)(e))
            + 0.7 * float(obj.mv_alpha_norm(6, bound=b, center=IMAGENET_MEAN)(e)))
    with Probe(resnet, objective) as probe:
        assert -float(probe(image)) == pytest.approx(want, rel=1e-4)


def test_inversion_paper_preset_lowers_its_objective(resnet, unchanged):
    target = smooth_image()
    with unchanged(resnet):
        result = invert(resnet, target, "layer1", steps=40)
    assert result.settings["tv_weight"] == inversion.MV_LAMBDA_V[0]  # layer1: the first third
    assert result.settings["depth"] == 0.25
    assert result.history[-1][0] > 0.75 * result.history[0][0]  # the loss down by a quarter
    start = inversion._paper_start((1, 3, 32, 32), 0)  # the mean colour plus noise of norm V
    assert torch.allclose(start.mean((0, 2, 3)), torch.tensor(IMAGENET_MEAN), atol=0.01)
    # the feature distance falls below the start's and below a grey image's
    from seethrough.featureviz.synthesis.inversion import feature_loss

    end = feature_loss(resnet, "layer1", result.images, target)
    assert end < 0.8 * feature_loss(resnet, "layer1", start, target)
    assert end < 0.8 * feature_loss(resnet, "layer1", torch.full_like(target, 0.5), target)


# -- Yosinski et al. 2015 -------------------------------------------------------------------

def test_yosinski_table():
    rows = {name: (s.decay, s.blur_width, s.blur_every, s.norm_pct, s.contribution_pct, s.iterations)
            for name, s in YOSINSKI.items()}
    assert rows == {"1": (0.0, 0.5, 4, 50.0, 0.0, 500), "2": (0.3, 0.0, 0, 20.0, 0.0, 750),
                    "3": (1e-4, 1.0, 4, 0.0, 0.0, 1000), "4": (0.0, 0.5, 4, 0.0, 90.0, 1000)}
    assert [type(r).__name__ for r in yosinski("2")] == ["L2Decay", "ClipSmallNorm"]
    assert [type(r).__name__ for r in yosinski("4")] == ["GaussianBlur", "ClipSmallContribution"]


def test_yosinski_regularizers_do_what_they_say():
    g = torch.Generator().manual_seed(0)
    x, grad = torch.randn(1, 3, 6, 7, generator=g), torch.randn(1, 3, 6, 7, generator=g)
    assert torch.allclose(L2Decay(0.3, center=0.0)(x, grad, 0), 0.7 * x)
    norms = x[0].norm(dim=0).numpy()
    small = norms < np.percentile(norms, 50)
    out = ClipSmallNorm(50, center=0.0)(x, grad, 0)
    assert torch.equal(out[0][:, torch.from_numpy(small)], torch.zeros(3, int(small.sum())))
    assert torch.equal(out[0][:, torch.from_numpy(~small)], x[0][:, torch.from_numpy(~small)])
    contribution = (x * grad)[0].sum(0).abs().numpy()
    small = contribution < np.percentile(contribution, 90)
    out = ClipSmallContribution(90, center=0.0)(x, grad, 0)
    assert int((out[0].abs().sum(0) == 0).sum()) == int(small.sum())
    assert torch.equal(out[0][:, torch.from_numpy(~small)], x[0][:, torch.from_numpy(~small)])
    # centred on the mean colour: clipped pixels become the mean, decay pulls towards it
    y = torch.rand(1, 3, 6, 7, generator=g)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(L2Decay(0.5)(y, grad, 0), (y + mean) / 2)
    # blur: scipy's gaussian_filter (sigma, truncate 4) inside the border, every k-th step only
    blur = GaussianBlur(1.0, 4)
    assert torch.equal(blur(x, grad, 1), x) and torch.equal(blur(x, grad, 3), x)
    big = torch.randn(1, 3, 20, 20, generator=g)
    ours = blur(big, grad, 4)[0, 0, 5:15, 5:15].numpy()
    theirs = scipy.ndimage.gaussian_filter(big[0, 0].double().numpy(), 1.0)[5:15, 5:15]
    assert np.allclose(ours, theirs, atol=1e-5)


def test_regularizers_run_between_steps_with_plain_gradient_ascent(net):
    calls = []

    def record(images, grad, step):
        calls.append((step, tuple(grad.shape), float(grad.abs().sum())))
        return images

    result = visualize(net, obj.channel("2", 1), steps=5, size=16, param="raw", transforms="none",
                       optimizer=torch.optim.SGD, lr=100.0, redirect_relu_steps=0,
                       regularizers=[record, *yosinski("3")])
    assert [c[0] for c in calls] == [0, 1, 2, 3, 4] and all(c[1] == (1, 3, 16, 16) for c in calls)
    assert all(c[2] > 0 for c in calls)
    assert result.history[-1][0] > result.history[0][0]
    assert 0 <= result.images.min() and result.images.max() <= 1


# -- DeepDream and L-BFGS in the Renderer ---------------------------------------------------

def test_deepdream_defaults_are_the_original_notebooks():
    defaults = {k: p.default for k, p in inspect.signature(deepdream).parameters.items()}
    assert (defaults["octaves"], defaults["octave_scale"], defaults["steps"]) == (4, 1.4, 10)
    assert defaults["step_size"] == 1.5 / 255 and defaults["jitter"] == 32


def test_renderer_runs_lbfgs_with_a_closure(net):
    objective = obj.channel("2", [0, 1]) - 0.1 * obj.l2()
    with Renderer(net, objective, size=16, param="fourier", transforms="none", lr=1.0,
                  optimizer=torch.optim.LBFGS, redirect_relu_steps=0,
                  optimizer_options={"line_search_fn": "strong_wolfe"}) as renderer:
        values = [renderer.step() for _ in range(6)]
    assert len(renderer.history) == 6 and torch.equal(values[-1], torch.tensor(renderer.history[-1]))
    assert renderer.evaluations >= 6
    assert all(b >= a - 1e-6 for a, b in zip(renderer.history[0], renderer.history[-1]))
    assert renderer.history[-1] != renderer.history[0]
